"""What a build has found so far, and report.json written from it: whole when the build ends, as far as
it got when it fails (its completed stages stay for reuse and diagnosis)."""

from __future__ import annotations

from dataclasses import dataclass, field

from converter.build.build_dir import StageResult
from converter.build.hybrid import HybridSearch
from converter.build.npu_models import NpuModel
from converter.build.plan import BuildPlan
from converter.build.request import BuildRequest
from converter.build.stages.calib import Calibration
from converter.build.stages.export import Exported
from converter.build.stages.images import Images
from converter.build.stages.passes import Rewritten
from converter.build.stages.reference import Reference
from converter.build.stages.rknn import Converted
from converter.build.stages.sensitivity import Sensitivities
from converter.reports.cost import cost
from converter.toolkit.driver import toolkit_version

IMAGES_DIR = "images/evaluation"  # `rkconvert generate` writes beside it, into images/


@dataclass(frozen=True)
class Delivery:
    """The files placed beside report.json."""

    artifacts: list[str]  # the .rknn, or its parts in run order (names in the build folder)
    artifact_bytes: list[int]
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
    rknn_files: list[dict] | None = None  # what each delivered .rknn declares about itself
    npu_models: list[NpuModel] | None = None  # a model that draws: its text encoder and VAE decoder, where they run
    images: Images | None = None
    peak_rss_bytes: dict | None = None
    delivery: Delivery | None = None
    error: str | None = None
    stages: list[StageResult] = field(default_factory=list)

    def report(self, status: str) -> dict:
        """report.json's content."""
        req, plan = self.request, self.plan
        report = {"status": status, "target": req.chip.name, "model": req.source.spec,
                  "dtype": plan.dtype if plan else req.dtype, "toolkit_version": toolkit_version(),
                  "min_psnr": req.gates.min_psnr, "min_layer_cos": req.gates.min_layer_cos, "command": req.command}
        if plan and plan.dtype_choice:
            report["dtype_choice"] = plan.dtype_choice
        if self.exported:
            report.update(resolution=self.exported.resolution, weights=self.exported.weights)
        if self.rewritten:
            report.update(onnx_bytes=self.rewritten.onnx_bytes, passes=self.rewritten.passes,
                          inputs=self.rewritten.inputs)
        if plan:
            report["graph"] = plan.graph
            if plan.parts_choice:
                report["parts_choice"] = plan.parts_choice
            if plan.algorithm_choice:
                report["quant_algorithm_choice"] = plan.algorithm_choice
            if plan.layers_skipped:
                report["layers_skipped"] = plan.layers_skipped
            report["toolkit_config"] = plan.toolkit.options
        delivered = self.final or self.plain
        placement = delivered.placement_rows() if delivered else None  # read once: `cost` reads it too
        if self.plain:
            report.update(self._accuracy(), check_inputs=self.reference.check_inputs,
                          check_timesteps=self.reference.timesteps,
                          calibration=self.calibration.summary() if self.calibration else None,
                          toolkit_phases=self.plain.phases, toolkit_phase_peak_rss_bytes=self.plain.phase_peak_rss_bytes,
                          placement=placement, cpu_ops=delivered.cpu_ops)
        if self.layers is not None:
            report["layers"] = self.layers
        if self.sensitivity:
            report["sensitivity"] = self.sensitivity.summary()
        if self.hybrid:
            found = self.hybrid.found
            report.update(hybrid_trials=self.hybrid.rows(), hybrid_guess=self.hybrid.predicted,
                          hybrid_floor=self.hybrid.floor, hybrid_kept=found.float16_layers if found else None)
        if self.final:
            report.update(float16_layers=self.final.float16_layers, rknn_stage=self.final.record.name,
                          rknn_file=self.rknn_files[0],
                          cost=cost(placement, self.final.memory, req.chip),
                          pipeline=str(req.source.pipeline.resolve()) if req.source.pipeline else None)
        if self.npu_models is not None:
            report["npu_models"] = {p.name: p.summary(req.out) for p in self.npu_models}
        if self.images:
            report["images"] = {**self.images.figures, "grid": f"{IMAGES_DIR}/{self.images.figures['grid']}"}
        if self.peak_rss_bytes:
            report["peak_rss_bytes"] = self.peak_rss_bytes
        if self.delivery:
            report.update(self._delivered())
        if self.error:
            report["error"] = self.error
        report["stages"] = [s.summary() for s in self.stages]
        return report

    def _accuracy(self) -> dict:
        a = self.accuracy
        return {"output_psnr_db": a["psnr_db"], "output_cosine": a["cosine"], "output_max_abs": a["max_abs"],
                "output_mean_abs": a["mean_abs"]}

    def _delivered(self) -> dict:
        d = self.delivery
        total = sum(d.artifact_bytes)
        delivered = {"artifact": d.artifacts[0], "artifact_bytes": total, "host_programs": d.host_programs,
                     "artifact_to_onnx": round(total / self.rewritten.onnx_bytes, 4)}
        if len(d.artifacts) > 1:
            delivered["parts"] = [{"artifact": name, "bytes": size, **io, "rknn_file": facts} for name, size, io, facts
                                  in zip(d.artifacts, d.artifact_bytes, self.final.part_io, self.rknn_files)]
        return delivered
