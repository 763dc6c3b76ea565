"""What one `rkconvert build` was asked to do, and where its results go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from converter.pipeline.build_dir import StageResult
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


@dataclass
class BuildRequest:
    source: ModelSource
    chip: Chip
    out: Path
    resolution: int | None = None
    min_psnr: float = 40.0
    min_layer_cos: float | None = None
    layer_report: str = "auto"
    dtype: str = "float16"
    check_samples: int = 1
    hybrid: bool = True  # quantized builds under --min-psnr keep their noisiest layers in float16
    hybrid_builds: int = 12  # at most this many toolkit builds in the hybrid search
    hybrid_parallel: int = 1  # that many of them at once (rounds of a k-ary search)
    ray_address: str | None = None  # hybrid trials as tasks on this Ray cluster
    check_inputs: str = "auto"  # auto: gaussian for float16, trajectories when activations are quantized
    seed: int = 0
    passes: str | None = None  # explicit "a,b,c", replacing the target's list
    enable_passes: tuple[str, ...] = ()
    skip_passes: tuple[str, ...] = ()
    attention_tiles: str = "auto"  # auto, off, or a tile count (converter/pipeline/pass_selection.py)
    # the graph as this many .rknn files, built one after another (converter/pipeline/graph_cut.py); None: auto
    parts: int | None = 1
    rebuild: bool = False
    image_check: str = "auto"  # auto: when the model brings an evaluation set (a pipeline folder's rkconvert.json)
    min_prompt_accuracy: float | None = None
    calib: CalibSettings = field(default_factory=CalibSettings)
    command: str | None = None  # the command line that asked for this build, for the report and releases
    stages: list[StageResult] = field(default_factory=list)

    @property
    def quantized(self) -> bool:
        return self.dtype != "float16"

    @property
    def trajectory_checks(self) -> bool:
        return self.check_inputs == "trajectories" or (self.check_inputs == "auto" and self.quantized)

    @property
    def artifact(self) -> Path:
        return self.out / f"{self.source.name}-{self.chip.name}.rknn"

    @property
    def artifacts(self) -> list[Path]:
        """The .rknn files a build delivers, in run order: the artifact, or its parts."""
        if self.parts in (1, None):
            return [self.artifact]
        return [self.artifact.with_suffix(f".part{i}.rknn") for i in range(1, self.parts + 1)]

    @property
    def report_path(self) -> Path:
        return self.out / "report.json"

    @property
    def html_path(self) -> Path:
        return self.out / "report.html"
