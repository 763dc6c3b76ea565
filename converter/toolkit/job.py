"""What the toolkit is asked to build, and the one place that says what a dtype means to it.

A ToolkitJob is everything one toolkit build depends on: the ONNX, its inputs and outputs by name, the
target, the dtype, the calibration dataset, the layers kept in float16 and any further `config()`
keywords. The build stage, the hybrid search, the rebuilt simulator, diagnose's probe and repro.py all
hand the toolkit a job; the worker turns it into the toolkit's calls.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

FLOAT16 = "float16"  # RKNN's name for a build without quantization
# What a quantized build keeps of hybrid_quantization_step1 (in `<build>/step1`): the quantized model and
# its config (every quantized tensor's range: converter/toolkit/quant_config.py).
STEP1_DIR, STEP1_MODEL, STEP1_DATA, QUANT_CONFIG = "step1", "model.model", "model.data", "quantization.cfg"
# config(quantized_algorithm=...): how the toolkit picks each tensor's int8 range from the calibration set
# (normal: min/max; mmse and kl_divergence: clipped to minimise the error or the distributions' distance).
QUANT_ALGORITHMS = ("normal", "mmse", "kl_divergence")


def quantized(dtype: str) -> bool:
    """Whether the toolkit quantizes a `dtype` build (it then calibrates on a dataset): every RKNN
    dtype but float16."""
    return dtype != FLOAT16


@dataclass(frozen=True)
class ToolkitJob:
    onnx: Path
    target: str  # RKNN's target_platform
    inputs: tuple[str, ...]  # the graph's input names, in the order the toolkit is fed
    outputs: tuple[str, ...]
    dtype: str = FLOAT16
    # RKNN's dataset file: a line per sample, the .npy of each input in input order (quantized builds).
    dataset: Path | None = None
    float16_layers: tuple[str, ...] = ()  # toolkit tensor names kept float16 in a quantized build (hybrid)
    options: dict = field(default_factory=dict)  # further config() keywords, e.g. enable_flash_attention
    # A folder with hybrid_quantization_step1's files for this graph and dataset (a plain build's `step1`):
    # a build keeping layers float16 then only runs step2.
    step1: Path | None = None
    # build(auto_hybrid=True): the toolkit itself moves the layers under config's auto_hybrid_cos_thresh to
    # float16 (a baseline for rkconvert's search; it keeps no step1).
    auto_hybrid: bool = False

    @property
    def quantized(self) -> bool:
        return quantized(self.dtype)

    def config(self) -> dict:
        """The keywords of the toolkit's config() besides target_platform."""
        return ({"quantized_dtype": self.dtype} if self.quantized else {}) | self.options

    def to_json(self) -> dict:
        return {**asdict(self), "onnx": str(self.onnx), "dataset": self.dataset and str(self.dataset),
                "step1": self.step1 and str(self.step1)}

    @classmethod
    def from_json(cls, data: dict) -> ToolkitJob:
        return cls(**{**data, "onnx": Path(data["onnx"]), "dataset": data["dataset"] and Path(data["dataset"]),
                      "inputs": tuple(data["inputs"]), "outputs": tuple(data["outputs"]),
                      "float16_layers": tuple(data["float16_layers"]), "step1": data["step1"] and Path(data["step1"])})


@dataclass(frozen=True)
class ToolkitSettings:
    """What every toolkit build of one model shares: the target, the dtype and further config() keywords."""

    target: str
    dtype: str = FLOAT16
    options: dict = field(default_factory=dict)
    auto_hybrid: bool = False

    @property
    def quantized(self) -> bool:
        return quantized(self.dtype)

    @property
    def step1_reusable(self) -> bool:
        """Whether a build may start from another's step1 files. With quantized_algorithm mmse, step2 from
        the files builds another model than step2 run in the process that ran step1 (the demo: 28.0 against
        29.8 dB; step1 and step2 again in one process reproduce the build exactly); with normal the two
        agree bit for bit. kl_divergence is not measured: treated as mmse."""
        return self.options.get("quantized_algorithm", "normal") == "normal"

    def key(self, **extra) -> dict:
        """What a stage that runs the toolkit with these settings depends on, beside its inputs and `extra`."""
        return {"target": self.target, "dtype": self.dtype, **extra, **self.options}

    def job(self, onnx: Path, inputs: list[str], outputs: list[str], dataset: Path | None = None,
            float16_layers: list[str] = (), step1: Path | None = None) -> ToolkitJob:
        """`step1` is dropped where it is not reusable (`step1_reusable`): the job then runs step1 itself."""
        return ToolkitJob(onnx, self.target, tuple(inputs), tuple(outputs), self.dtype,
                          dataset if self.quantized else None, tuple(float16_layers), self.options,
                          step1 if self.step1_reusable else None, self.auto_hybrid)
