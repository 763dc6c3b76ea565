"""A finished build reopened as one object: its report, its stages as their typed results, and its
`.rknn` ready to be rebuilt in a serving simulator. `generate`, `release`, the board runner's
`--simulate` and the benchmarks work from it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from converter.builds.build_dir import finished_stage
from converter.builds.simulator import BuiltModel, PipelineModels
from converter.builds.stages.calib import Calibration
from converter.builds.stages.export import Exported
from converter.builds.stages.passes import Rewritten
from converter.builds.stages.pipeline_models import Traced
from converter.builds.stages.reference import Reference
from converter.builds.stages.rknn import Converted
from converter.builds.stages.split import Split
from converter.builds.stages.split_calib import PartCalibration
from converter.builds.toolkit_inputs import ToolkitInputs
from converter.common.digest import file_chunks, sha256
from converter.common.errors import UserError
from converter.reports.build_report import BuildReport, load_build
from converter.toolkit.job import ToolkitSettings, quantized


@dataclass(frozen=True)
class FinishedBuild:
    folder: Path
    report: BuildReport

    @classmethod
    def open(cls, folder: Path, then: str = "build it first") -> FinishedBuild:
        """The build in `folder`; UserError unless it finished and its .rknn files are the ones it delivered
        (`then`: what the user should do about it)."""
        report = load_build(folder)
        if not report.ok:
            raise UserError(f"{folder / 'report.json'}: the build did not finish (status {report.status!r}); {then}")
        built = cls(folder, report)
        delivered = report.delivered
        sizes = [p.bytes for p in delivered.parts] if delivered.parts else [delivered.artifact_bytes]
        for path, size, digest in zip(built.artifacts, sizes, delivered.artifact_sha256 or [None] * len(sizes)):
            if not path.is_file():
                raise UserError(f"{path}: missing from the build folder; {then}")
            if path.stat().st_size != size or digest is not None and sha256(file_chunks(path)) != digest:
                raise UserError(f"{path}: not the .rknn this build delivered (its size or sha256 differs); {then}")
        return built

    @property
    def pipeline(self) -> Path | None:
        """The diffusers pipeline folder the model came from (a model that draws), else None."""
        return Path(self.report.pipeline) if self.report.pipeline else None

    @property
    def artifacts(self) -> list[Path]:
        """The delivered .rknn, or its parts in run order."""
        return [self.folder / name for name in self.report.artifacts]

    def artifact_sha256(self) -> list[str]:
        """Each delivered .rknn's sha256, in run order: as the report records it (`open` checked the files
        against it), or read from the files for a report written before reports recorded it."""
        return self.report.delivered.artifact_sha256 or [sha256(file_chunks(path)) for path in self.artifacts]

    @cached_property
    def export(self) -> Exported:
        return Exported.read(finished_stage(self.folder, "export"))

    @cached_property
    def passes(self) -> Rewritten:
        return Rewritten.read(finished_stage(self.folder, "passes"))

    @cached_property
    def reference(self) -> Reference:
        return Reference.read(finished_stage(self.folder, "reference"))

    @cached_property
    def rknn(self) -> Converted:
        """The toolkit build that was delivered (the plain one, or the hybrid search's)."""
        return Converted.read(finished_stage(self.folder, self.report.rknn_stage))

    @cached_property
    def toolkit_inputs(self) -> ToolkitInputs:
        parts = len(self.rknn.rknn) > 1
        calibration = None
        if quantized(self.report.dtype):
            calibration = (PartCalibration.read(finished_stage(self.folder, "split-calib")) if parts
                           else Calibration.read(finished_stage(self.folder, "calib")))
        split = Split.read(finished_stage(self.folder, "split")) if parts else None
        return ToolkitInputs(self.passes, split, self.reference, calibration)

    @cached_property
    def traced(self) -> Traced:
        """The text encoder and VAE decoder as ONNX (a model that draws)."""
        return Traced.read(finished_stage(self.folder, "pipeline-models"))

    @cached_property
    def npu_models(self) -> dict[str, FinishedBuild]:
        """The builds of the pipeline's models that run on the NPU beside the UNet (build/npu_models.py)."""
        return {name: FinishedBuild.open(self.folder / entry.folder, f"rebuild {self.folder}")
                for name, entry in (self.report.npu_models or {}).items() if entry.on == "npu"}

    def models(self) -> PipelineModels:
        """What a drawing runs on the NPU: the UNet, and the pipeline models built beside it."""
        return PipelineModels(self.model(), **{name: built.model() for name, built in self.npu_models.items()})

    def model(self) -> BuiltModel:
        """What the simulator rebuilds: the delivered build's jobs, with its float16 layers and options."""
        settings = ToolkitSettings(self.report.target, self.report.dtype, self.rknn.toolkit_config,
                                   self.rknn.auto_hybrid)
        jobs = self.toolkit_inputs.jobs(settings, self.rknn.float16_layers, self.rknn.step1)
        return BuiltModel(self.passes, self.reference, jobs, self.rknn.simulator[0][0])
