"""Everything the toolkit is handed for one build, as the stages before it made it: the graph (whole, or
its parts), the check inputs it is simulated on, and what it calibrates on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converter.builds.build_dir import StageOutput
from converter.builds.stages.calib import Calibration
from converter.builds.stages.passes import Rewritten
from converter.builds.stages.reference import Reference
from converter.builds.stages.split import Split
from converter.builds.stages.split_calib import PartCalibration
from converter.toolkit.job import ToolkitJob, ToolkitSettings


@dataclass(frozen=True)
class ToolkitInputs:
    passes: Rewritten
    split: Split | None  # --parts: the graph cut into parts, each its own toolkit build
    reference: Reference
    # stage calib for a graph built whole, stage split-calib for parts; None for float16
    calibration: Calibration | PartCalibration | None

    @property
    def stages(self) -> list[StageOutput]:
        """The stages a toolkit build depends on: its stage key chains on them."""
        return [s for s in (self.passes, self.reference, self.calibration, self.split) if s is not None]

    def jobs(self, settings: ToolkitSettings, float16_layers: list[str] = (),
             step1: list[Path] | None = None) -> list[ToolkitJob]:
        """What the toolkit builds, in run order: the passes' graph, or its parts, each fed the graph's
        inputs and earlier parts' outputs by name; `step1`: per job, a quantized build's step1 folder to
        start from."""
        models = [(self.passes.onnx, self.passes.input_names, self.passes.outputs)] if self.split is None else \
            [(part.onnx, part.inputs, part.outputs) for part in self.split.parts]
        datasets = self.calibration.datasets if self.calibration else [None] * len(models)
        return [settings.job(onnx, inputs, outputs, dataset, float16_layers, first)
                for (onnx, inputs, outputs), dataset, first in zip(models, datasets, step1 or [None] * len(models))]
