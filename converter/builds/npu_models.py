"""The text encoder and VAE decoder of a model that draws, built for the NPU beside its UNet.

Each is a build of its own, by the same pipeline as any ONNX graph (the target's passes that match it, a
float16 build, the simulator checked against ONNX Runtime, the toolkit's cost estimate), in
BUILD_DIR/npu/<model>/ with its own report.json and stages, reused like the UNet's. A model the toolkit
cannot build, or whose output misses --min-psnr, stays on the CPU (onnxruntime on the board): the report
says why, and the build goes on, since the UNet is what it delivers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converter.builds.finished import FinishedBuild
from converter.builds.request import BuildRequest, Checks, Gates
from converter.builds.stages.pipeline_models import Traced
from converter.models.model_source import ModelSource
from converter.reports.build_report import NpuModelEntry
from converter.reports.cost import estimate_headline
from converter.reports.report import placement_summary

NPU_DIR = "npu"


@dataclass(frozen=True)
class NpuModel:
    name: str  # a family.PIPELINE_MODELS name
    built: FinishedBuild | None  # its finished build; None: it stays on the CPU
    why_cpu: str | None = None

    def summary(self, build_dir: Path) -> NpuModelEntry:
        """report.json `npu_models` entry: where the .rknn is and how it did, or why the model stays on the CPU."""
        if self.built is None:
            return NpuModelEntry("cpu", why=self.why_cpu)
        r = self.built.report
        where = self.built.folder.resolve().relative_to(build_dir.resolve())
        placed = r.delivered  # None until the build it belongs to has passed
        return NpuModelEntry("npu", folder=str(where), artifact=str(where / placed.artifact) if placed else None,
                             artifact_bytes=placed.artifact_bytes if placed else None,
                             output_psnr_db=r.accuracy.psnr_db, output_cosine=r.accuracy.cosine,
                             placement=placement_summary(r.placement),
                             estimate=estimate_headline(r.cost))


def folder(build_dir: Path, name: str) -> Path:
    return build_dir / NPU_DIR / name


def request(req: BuildRequest, name: str, traced: Traced) -> BuildRequest:
    """The build of pipeline model `name` from its traced `onnx`: float16 (a decoder's activations span what int8 would
    clip, and neither model is worth a calibration set), checked on Gaussian inputs at the UNet's gate, without
    the per-layer report (`rkconvert build --model` on the model's ONNX makes one), with the target's passes."""
    onnx = traced.onnx[name]
    source = ModelSource(f"{onnx.parent.name}/{onnx.name}", "onnx", onnx, identity=f"{traced.key}/{name}")
    return BuildRequest(source=source, chip=req.chip, out=folder(req.out, name),
                        seed=req.seed, dtype="float16", checks=Checks(layer_report="off"),
                        gates=Gates(min_psnr=req.gates.min_psnr), rebuild=req.rebuild)

