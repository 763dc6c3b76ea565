"""What one `rkconvert build` was asked to do, and where its results go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from targets.chip import Chip

from .build_dir import StageResult
from .model_source import ModelSource

DTYPE = "float16"
LAYER_REPORT_CHOICES = ("auto", "on", "off")


@dataclass
class BuildRequest:
    source: ModelSource
    chip: Chip
    out: Path
    resolution: int | None = None
    min_psnr: float = 40.0
    min_layer_cos: float | None = None
    layer_report: str = "auto"
    check_samples: int = 1
    seed: int = 0
    passes: str | None = None  # explicit "a,b,c", replacing the target's list
    enable_passes: tuple[str, ...] = ()
    skip_passes: tuple[str, ...] = ()
    rebuild: bool = False
    stages: list[StageResult] = field(default_factory=list)

    @property
    def artifact(self) -> Path:
        return self.out / f"{self.source.name}-{self.chip.name}.rknn"

    @property
    def report_path(self) -> Path:
        return self.out / "report.json"

    @property
    def html_path(self) -> Path:
        return self.out / "report.html"
