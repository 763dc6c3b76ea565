"""report.json of a build, and its one reader and writer: `build` writes it (from builds/outcome.py), and
`generate`, `release`, `diagnose`, the matrix, the image and size checks and the benchmarks read it as a
`BuildReport`, never by key. The renderers (report.py, report_html.py) take its JSON form.

Every report has every key (null where the build did not get that far, or has no such thing); a report
written before that is read with what it has. The tables inside (placement, per-layer rows, passes,
hybrid trials, stages) stay rows: the renderers lay them out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from converter.board.manifest import LoraUsed, VaeUsed
from converter.common.errors import UserError
from converter.common.json_files import finite, write_json
from converter.reports.report import write_html
from converter.toolkit.rknn_file import RknnFile

NAME = "report.json"


@dataclass(frozen=True)
class OutputAccuracy:
    """The build's output against ONNX Runtime on its check inputs (output_psnr_db, ... in report.json)."""

    psnr_db: float | None  # None: bit-exact (JSON has no Infinity)
    cosine: float
    max_abs: float
    mean_abs: float

    @classmethod
    def of(cls, metrics: dict) -> OutputAccuracy:
        """From compare_outputs' metrics (psnr_db, cosine, max_abs, mean_abs)."""
        return cls(metrics["psnr_db"], metrics["cosine"], metrics["max_abs"], metrics["mean_abs"])


@dataclass(frozen=True)
class DeliveredPart:
    """One .rknn of a build in parts (--parts), in run order, with the tensors it takes and hands on."""

    artifact: str
    bytes: int
    inputs: list[str]
    outputs: list[str]
    rknn_file: RknnFile


@dataclass(frozen=True)
class Delivered:
    """The files placed beside report.json once the build passed."""

    artifact: str  # the .rknn, or the first of its parts
    artifact_bytes: int  # all parts'
    host_programs: list[str]
    artifact_to_onnx: float
    artifact_sha256: list[str]  # each .rknn's, in run order: what opening the build checks
    parts: list[DeliveredPart] | None  # None: one .rknn


@dataclass(frozen=True)
class NpuModelEntry:
    """A pipeline model (text encoder, VAE decoder) beside the UNet: its build, or why it stays on the CPU."""

    on: str  # npu | cpu
    why: str | None = None  # on the CPU: why
    folder: str | None = None  # on the NPU: its build folder, under the UNet's
    artifact: str | None = None
    artifact_bytes: int | None = None
    output_psnr_db: float | None = None
    output_cosine: float | None = None
    placement: str | None = None
    estimate: dict | None = None  # the toolkit's cycle estimate: label, leaves_out, total_cycles, ...

    def to_json(self) -> dict:
        """On the CPU: why; on the NPU: the rest (artifact null until the build it belongs to has passed)."""
        if self.on == "cpu":
            return {"on": self.on, "why": self.why}
        return {k: v for k, v in vars(self).items() if k != "why"}


@dataclass(frozen=True)
class ImageCheck:
    """The evaluation set drawn through ONNX Runtime and through the .rknn models in the simulator."""

    summary: dict  # images, psnr_db_mean, psnr_db_min, ssim_mean[, reference/rknn_prompt_accuracy]
    rows: list[dict]  # per prompt: prompt, seed, reference and rknn PNGs, psnr_db, ssim
    grid: str
    steps: int
    guidance_scale: float
    judge: str | None
    on_npu: list[str]

    @property
    def psnr_db_mean(self) -> float:
        return self.summary["psnr_db_mean"]

    @property
    def rknn_prompt_accuracy(self) -> float | None:
        return self.summary.get("rknn_prompt_accuracy")

    @property
    def reference_prompt_accuracy(self) -> float | None:
        return self.summary.get("reference_prompt_accuracy")


@dataclass(frozen=True)
class BuildReport:
    status: str  # ok | failed
    target: str
    model: str
    dtype: str
    toolkit_version: str
    min_psnr: float
    min_layer_cos: float | None
    command: str | None
    dtype_choice: str | None = None
    resolution: int | None = None  # a UNet's, in pixels
    loras: list[LoraUsed] | None = None  # fused into the model before export
    vae: VaeUsed | None = None  # in place of the model's own
    shapes_fixed: str | None = None  # an ONNX UNet exported with dynamic axes: what was fixed, in words
    weights: str | None = None
    onnx_bytes: int | None = None
    passes: list[dict] | None = None  # what each pass did
    inputs: dict | None = None  # the rewritten graph's: name -> {"shape", "dtype"}
    graph: str | None = None  # unet | graph
    parts_choice: str | None = None
    quant_algorithm_choice: str | None = None
    layers_skipped: str | None = None
    toolkit_config: dict | None = None
    accuracy: OutputAccuracy | None = None
    check_inputs: str | None = None  # gaussian | trajectories
    check_timesteps: list[float] | None = None
    calibration: dict | None = None
    toolkit_phases: dict | None = None
    toolkit_phase_peak_rss_bytes: dict | None = None
    placement: list[dict] | None = None
    cpu_ops: int | None = None
    layers: list[dict] | None = None
    sensitivity: dict | None = None
    hybrid_trials: list[dict] | None = None
    hybrid_guess: int | None = None
    hybrid_floor: int | None = None
    hybrid_kept: int | None = None
    float16_layers: list[str] | None = None
    rknn_stage: str | None = None  # the stage whose build was delivered
    rknn_file: RknnFile | None = None  # what the (first) .rknn declares about itself
    cost: dict | None = None  # the toolkit's cycle estimate: not a board measurement
    pipeline: str | None = None  # the diffusers pipeline folder the model came from
    npu_models: dict[str, NpuModelEntry] | None = None
    images: ImageCheck | None = None
    peak_rss_bytes: dict | None = None
    delivered: Delivered | None = None
    error: str | None = None
    stages: list[dict] | None = None  # name, seconds, reused
    diagnosis: dict | None = None  # a failed build diagnosed: file, failure, known, fix (converter/diagnose/)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def psnr_db(self) -> float | None:
        return self.accuracy.psnr_db if self.accuracy else None

    @property
    def artifacts(self) -> list[str]:
        """The delivered .rknn, or its parts in run order (names in the build folder)."""
        if self.delivered is None:
            return []
        return [p.artifact for p in self.delivered.parts] if self.delivered.parts else [self.delivered.artifact]

    @property
    def estimated_cycles(self) -> int | None:
        return (self.cost or {}).get("total_cycles")

    @property
    def estimated_seconds_per_step(self) -> float | None:
        return (self.cost or {}).get("estimated_seconds_per_step")

    @property
    def float16_share(self) -> tuple[float | None, float | None]:
        """(share of the layers, share of the estimated cycles) that run in float16."""
        share = (self.cost or {}).get("float16_share") or {}
        return share.get("layers"), share.get("cycles")

    def to_json(self) -> dict:
        made = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "accuracy":
                made.update({f"output_{k}": getattr(value, k) if value else None for k in _ACCURACY})
            elif f.name == "delivered":
                made.update({k: getattr(value, k) if value else None for k in _DELIVERED})
                if value and value.parts:
                    made["parts"] = [{**vars(p), "rknn_file": p.rknn_file.to_json()} for p in value.parts]
            elif f.name == "rknn_file":
                made[f.name] = value.to_json() if value else None
            elif f.name == "npu_models":
                made[f.name] = None if value is None else {k: v.to_json() for k, v in value.items()}
            elif f.name == "images":
                made[f.name] = vars(value) if value else None
            elif f.name == "loras":
                made[f.name] = [vars(one) for one in value] if value else None
            elif f.name == "vae":
                made[f.name] = vars(value) if value else None
            else:
                made[f.name] = value
        return finite(made)

    @classmethod
    def from_json(cls, raw: dict) -> BuildReport:
        plain = {f.name: raw.get(f.name) for f in fields(cls) if f.name not in _TYPED}
        parts = raw.get("parts")
        return cls(
            **plain,
            accuracy=OutputAccuracy(*(raw.get(f"output_{k}") for k in _ACCURACY))
            if raw.get("output_cosine") is not None else None,
            rknn_file=RknnFile(**raw["rknn_file"]) if raw.get("rknn_file") else None,
            npu_models=None if raw.get("npu_models") is None else
            {name: NpuModelEntry(**entry) for name, entry in raw["npu_models"].items()},
            images=ImageCheck(**{k: raw["images"].get(k) for k in _IMAGES}) if raw.get("images") else None,
            loras=[LoraUsed(**one) for one in raw["loras"]] if raw.get("loras") else None,
            vae=VaeUsed(**raw["vae"]) if raw.get("vae") else None,
            delivered=Delivered(
                **{k: raw.get(k) for k in _DELIVERED},
                parts=[DeliveredPart(**{**p, "rknn_file": RknnFile(**p["rknn_file"])}) for p in parts]
                if parts else None)
            if raw.get("artifact") else None)

    def write(self, path: Path) -> None:
        write_json(path, self.to_json())

    def written(self, report_path: Path, html_path: Path) -> None:
        """report.json and report.html."""
        self.write(report_path)
        write_html(html_path, self.to_json())


_ACCURACY = ("psnr_db", "cosine", "max_abs", "mean_abs")
_DELIVERED = ("artifact", "artifact_bytes", "host_programs", "artifact_to_onnx", "artifact_sha256")
_IMAGES = tuple(f.name for f in fields(ImageCheck))
_TYPED = ("accuracy", "rknn_file", "npu_models", "images", "delivered", "loras", "vae")


@dataclass(frozen=True)
class SizeEntry:
    """One size of a build of several (--resolution A,B): its folder and headline figures."""

    folder: str
    status: str
    artifact_bytes: int | None
    output_psnr_db: float | None
    images: dict | None  # the image check's summary figures


@dataclass(frozen=True)
class SizesIndex:
    """OUT/report.json of a build of several sizes: each size's build, in --resolution's order."""

    status: str
    model: str
    target: str
    dtype: str
    command: str | None
    sizes: dict[str, SizeEntry]

    def to_json(self) -> dict:
        return finite({**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "sizes"},
                        "sizes": {size: vars(entry) for size, entry in self.sizes.items()}})

    @classmethod
    def from_json(cls, raw: dict) -> SizesIndex:
        return cls(**{f.name: raw.get(f.name) for f in fields(cls) if f.name != "sizes"},
                   sizes={size: SizeEntry(**entry) for size, entry in raw["sizes"].items()})

    def write(self, path: Path) -> None:
        write_json(path, self.to_json())


def load(path: Path) -> BuildReport | SizesIndex:
    """The report of a build folder (or its report.json); UserError naming the file when it is not one."""
    report_path = path / NAME if path.is_dir() else path
    try:
        raw = json.loads(report_path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no {NAME} (not an rkconvert build folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{report_path}: not a readable report ({e})") from None
    if not isinstance(raw, dict) or "target" not in raw:
        raise UserError(f"{report_path}: not an rkconvert report")
    try:
        return SizesIndex.from_json(raw) if "sizes" in raw else BuildReport.from_json(raw)
    except (TypeError, KeyError, AttributeError) as e:
        raise UserError(f"{report_path}: not a report this rkconvert reads ({e})") from None


def load_build(path: Path) -> BuildReport:
    """The report of a single build (not an index of sizes); UserError otherwise."""
    report = load(path)
    if isinstance(report, SizesIndex):
        folders = ", ".join(str(path / entry.folder) for entry in report.sizes.values())
        raise UserError(f"{path}: one build per size (--resolution A,B,...): name one of {folders}")
    return report
