"""What one command was asked to do, as the option groups parsed it: never changed while it runs
(what a build settles from it is its plan: plan.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converter.models.family import PIPELINE_MODELS
from converter.models.model_source import ModelSource
from targets.chip import Chip

LAYER_REPORT_CHOICES = ("auto", "on", "off")
IMAGE_CHECK_CHOICES = ("auto", "on", "off")
CHECK_INPUT_CHOICES = ("auto", "gaussian", "trajectories")


@dataclass(frozen=True)
class CalibSettings:
    """How the calibration set is recorded (calib_data/)."""

    schedule: str = "sd15-20step"
    samples: int = 32
    trajectories: int = 4
    weighting: str = "schedule"
    prompts: Path | None = None  # None: the built-in prompt set
    text_encoder: Path | None = None  # None: a tiny seeded CLIP text encoder

    def fingerprint(self) -> dict:
        files = {}
        for key in ("prompts", "text_encoder"):
            path = getattr(self, key)
            files[key] = None if path is None else [str(path.resolve()), path.stat().st_mtime_ns]
        return {"schedule": self.schedule, "samples": self.samples, "trajectories": self.trajectories,
                "weighting": self.weighting, **files}


@dataclass(frozen=True)
class PassChoice:
    """Which graph passes to run: the target's list (converter/builds/pass_selection.py) as adjusted."""

    explicit: str | None = None  # "a,b,c" replacing the target's list
    enable: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    attention_tiles: str = "auto"  # auto, off, or a tile count


@dataclass(frozen=True)
class Checks:
    """How the `.rknn` is compared with ONNX Runtime."""

    samples: int = 1
    inputs: str = "auto"  # auto: gaussian for float16, trajectories when the build is quantized
    layer_report: str = "auto"  # auto: when the toolkit's per-layer dumps stay small
    image_check: str = "auto"  # auto: when the model brings an evaluation set (a pipeline folder's rkconvert.json)


@dataclass(frozen=True)
class Gates:
    """What a build must reach to pass."""

    min_psnr: float = 40.0
    min_layer_cos: float | None = None
    min_prompt_accuracy: float | None = None


@dataclass(frozen=True)
class HybridSettings:
    """The search for the fewest layers a quantized build keeps in float16 to reach --min-psnr."""

    enabled: bool = True
    builds: int = 12  # at most this many toolkit builds
    parallel: int = 1  # that many of them at once (rounds of a k-ary search)
    ray_address: str | None = None  # trials as tasks on this Ray cluster
    max_float16: float = 0.25  # no search when the emulation says the gate needs more of the layers float16
    # Instead of the search, the toolkit's build(auto_hybrid=True) with this auto_hybrid_cos_thresh (a baseline)
    toolkit_cos: float | None = None
    # The search stops once its answer is within this share of the most layers that fell short: the last
    # builds of an exact search each save a layer or two, which no board would notice.
    slack: float = 0.05
    # Layers are ranked at this resolution when the build's is larger: the same weights and the build's
    # int8 scales on a smaller graph (gradients of SD 1.5 at 512 px would need tens of GB).
    rank_resolution: int = 128


def default_out(source: ModelSource, chip: Chip) -> Path:
    """The build folder when --out is not given."""
    return Path("build") / f"{source.name}-{chip.name}"


@dataclass(frozen=True)
class BuildRequest:
    source: ModelSource
    chip: Chip
    out: Path
    resolution: int | None = None
    resolutions: tuple[int, ...] = ()  # several sizes, a build of each (build/sizes.py); resolution is then None
    seed: int = 0
    dtype: str = "float16"  # an RKNN dtype, or "auto"
    parts: int | None = 1  # the graph as this many .rknn files (converter/builds/graph_cut.py); None: auto
    parts_in_turn: bool = False  # each part's toolkit exits before the next starts; else relayed (toolkit/relay.py)
    quant_algorithm: str | None = None  # the toolkit's quantized_algorithm for a quantized build; None: normal
    passes: PassChoice = PassChoice()
    calib: CalibSettings = CalibSettings()
    checks: Checks = Checks()
    gates: Gates = Gates()
    hybrid: HybridSettings = HybridSettings()
    # a model that draws: which of its other parts are built for the NPU too (build/npu_models.py)
    npu_models: tuple[str, ...] = PIPELINE_MODELS
    rebuild: bool = False
    command: str | None = None  # the command line that asked for this build, for the report and releases

    @property
    def artifact(self) -> Path:
        return self.out / f"{self.source.name}-{self.chip.name}.rknn"

    @property
    def report_path(self) -> Path:
        return self.out / "report.json"

    @property
    def html_path(self) -> Path:
        return self.out / "report.html"
