"""What a build has found so far, and report.json written from it: whole when the build ends, as far as
it got when it fails (its completed stages stay for reuse and diagnosis)."""

from __future__ import annotations

from dataclasses import dataclass, field

from converter.board.manifest import LoraUsed, VaeUsed
from converter.builds.build_dir import StageResult
from converter.builds.hybrid import HybridSearch
from converter.builds.npu_models import NpuModel
from converter.builds.plan import BuildPlan
from converter.builds.request import BuildRequest
from converter.builds.stages.calib import Calibration
from converter.builds.stages.export import Exported
from converter.builds.stages.images import Images
from converter.builds.stages.passes import Rewritten
from converter.builds.stages.reference import Reference
from converter.builds.stages.rknn import Converted
from converter.builds.stages.sensitivity import Sensitivities
from converter.reports.build_report import BuildReport, Delivered, DeliveredPart, ImageCheck, OutputAccuracy
from converter.reports.cost import cost
from converter.toolkit.driver import toolkit_version
from converter.toolkit.rknn_file import RknnFile

IMAGES_DIR = "images/evaluation"  # `rkconvert generate` writes beside it, into images/


@dataclass(frozen=True)
class Delivery:
    """The files placed beside report.json."""

    artifacts: list[str]  # the .rknn, or its parts in run order (names in the build folder)
    artifact_bytes: list[int]
    sha256: list[str]
    host_programs: list[str]


@dataclass
class Outcome:
    request: BuildRequest
    plan: BuildPlan | None = None
    exported: Exported | None = None
    rewritten: Rewritten | None = None
    reference: Reference | None = None
    calibration: Calibration | None = None
    plain: Converted | None = None  # the toolkit's build as planned
    accuracy: dict | None = None  # the delivered build's output against ONNX Runtime
    layers: list[dict] | None = None
    sensitivity: Sensitivities | None = None
    hybrid: HybridSearch | None = None
    final: Converted | None = None  # what is delivered: the plain build, or the hybrid search's
    rknn_files: list[RknnFile] | None = None  # what each delivered .rknn declares about itself
    npu_models: list[NpuModel] | None = None  # a model that draws: its text encoder and VAE decoder, where they run
    passed_models: dict[str, Outcome] | None = None  # their builds that passed, placed once this one has
    images: Images | None = None
    peak_rss_bytes: dict | None = None
    delivery: Delivery | None = None
    error: str | None = None
    stages: list[StageResult] = field(default_factory=list)

    def report(self, status: str) -> BuildReport:
        """report.json's content."""
        req, plan = self.request, self.plan
        exported, rewritten, delivered = self.exported, self.rewritten, self.final or self.plain
        placement = delivered.placement_rows() if delivered else None  # read once: `cost` reads it too
        plain, hybrid, final = self.plain, self.hybrid, self.final
        return BuildReport(
            status=status, target=req.chip.name, model=req.source.spec, dtype=plan.dtype if plan else req.dtype,
            toolkit_version=toolkit_version(), min_psnr=req.gates.min_psnr, min_layer_cos=req.gates.min_layer_cos,
            command=req.command, dtype_choice=plan.dtype_choice if plan else None,
            resolution=exported.resolution if exported else None,
            loras=[LoraUsed(lora.path.name, lora.sha256, lora.scale) for lora in req.source.loras] or None,
            vae=VaeUsed(req.source.vae.path.name, req.source.vae.sha256, req.source.vae.kind) if req.source.vae else None,
            weights=exported.weights if exported else None,
            shapes_fixed=exported.shapes_fixed if exported else None,
            onnx_bytes=rewritten.onnx_bytes if rewritten else None, passes=rewritten.passes if rewritten else None,
            inputs=rewritten.inputs if rewritten else None, graph=plan.graph if plan else None,
            parts_choice=plan.parts_choice if plan else None,
            quant_algorithm_choice=plan.algorithm_choice if plan else None,
            layers_skipped=plan.layers_skipped if plan else None, toolkit_config=plan.toolkit.options if plan else None,
            accuracy=OutputAccuracy.of(self.accuracy) if plain else None,
            check_inputs=self.reference.check_inputs if plain else None,
            check_timesteps=self.reference.timesteps if plain else None,
            calibration=self.calibration.summary() if plain and self.calibration else None,
            toolkit_phases=plain.phases if plain else None,
            toolkit_phase_peak_rss_bytes=plain.phase_peak_rss_bytes if plain else None,
            placement=placement if plain else None, cpu_ops=delivered.cpu_ops if plain else None,
            layers=self.layers, sensitivity=self.sensitivity.summary() if self.sensitivity else None,
            hybrid_trials=hybrid.rows() if hybrid else None, hybrid_guess=hybrid.predicted if hybrid else None,
            hybrid_floor=hybrid.floor if hybrid else None,
            hybrid_kept=hybrid.found.float16_layers if hybrid and hybrid.found else None,
            float16_layers=final.float16_layers if final else None, rknn_stage=final.record.name if final else None,
            rknn_file=self.rknn_files[0] if final else None,
            cost=cost(placement, final.memory, req.chip) if final else None,
            pipeline=str(req.source.pipeline.resolve()) if final and req.source.pipeline else None,
            npu_models=None if self.npu_models is None else {m.name: m.summary(req.out) for m in self.npu_models},
            images=ImageCheck(**{**self.images.figures, "grid": f"{IMAGES_DIR}/{self.images.figures['grid']}"})
            if self.images else None,
            peak_rss_bytes=self.peak_rss_bytes, delivered=self._delivered(), error=self.error,
            stages=[s.summary() for s in self.stages])

    def _delivered(self) -> Delivered | None:
        d = self.delivery
        if d is None:
            return None
        total = sum(d.artifact_bytes)
        parts = [DeliveredPart(name, size, io["inputs"], io["outputs"], facts) for name, size, io, facts
                 in zip(d.artifacts, d.artifact_bytes, self.final.part_io, self.rknn_files)]
        return Delivered(artifact=d.artifacts[0], artifact_bytes=total, host_programs=d.host_programs,
                         artifact_to_onnx=round(total / self.rewritten.onnx_bytes, 4), artifact_sha256=d.sha256,
                         parts=parts if len(parts) > 1 else None)
