"""Stage `export`: the model as a static-shape float32 ONNX graph (traced, or a user's ONNX checked and
copied: a UNet, its LDM input names renamed to diffusers', or any other graph); W8A16 weights, from either
form, arrive dequantized exactly (int8 x scale)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converter.builds.build_dir import StageOutput, StageResult
from converter.builds.stage_run import StageRunner
from converter.common import onnx_files
from converter.common.errors import UserError
from converter.models.family import VAE_SCALE, Signature
from converter.models.model_source import ModelSource
from converter.models.unet_interface import UNET, check_unet, classify, specs_from_json, specs_to_json
from converter.w8a16 import weight_dequantize


@dataclass(frozen=True)
class Exported(StageOutput):
    onnx: Path
    graph: str  # unet_interface.UNET, or GRAPH: another ONNX graph, built and checked as it is
    resolution: int | None  # a UNet's, in pixels
    inputs: dict  # input name -> {"shape", "dtype"} (unet_interface.specs_to_json)
    w8a16_layers: int  # int8 layers of a W8A16 checkpoint, dequantized exactly
    weights: str  # what the weights are, in words
    shapes_fixed: str | None  # an ONNX UNet exported with dynamic axes: what was fixed (models/dynamic_unet.py)

    @classmethod
    def read(cls, record: StageResult) -> Exported:
        meta = record.meta
        return cls(record, record.path / meta["onnx"], meta["graph"], meta["resolution"], meta["inputs"],
                   meta["w8a16_layers"], meta["weights"], meta["shapes_fixed"])

    @property
    def signature(self) -> Signature | None:
        """A UNet's inputs as its family has them; None for another graph."""
        return Signature.of_specs(specs_from_json(self.inputs)) if self.graph == UNET else None


def stage(runner: StageRunner, source: ModelSource, resolution: int | None, name: str = "export") -> Exported:
    """The model as ONNX at `resolution` (None: its own), reused from an earlier run when unchanged; as another
    stage (`proxy-export`) beside the build's at another size."""
    what = f"{source.spec} to ONNX" + (f" at {resolution} px" if name != "export" else "")
    return Exported.read(runner.run(name, what, {"source": source.fingerprint(), "resolution": resolution}, [],
                                    lambda tmp: run(source, resolution, tmp)))


def run(source: ModelSource, resolution: int | None, tmp: Path) -> dict:
    path = tmp / "model.onnx"
    if source.kind == "onnx":
        model, int8 = weight_dequantize.fold(onnx_files.load_lazy(source.path), source.path)
        w8a16_layers = len(int8)
        graph, specs, shapes_fixed = classify(model, source.path, resolution)
        traced_at = specs["sample"][0][-1] * 8 if graph == UNET else None
        if resolution not in (None, traced_at):
            fixed = f"fixed at {traced_at} px" if traced_at else "fixed (not a UNet: no resolution)"
            raise UserError(f"{source.path}: shapes are {fixed}; drop --resolution or re-export")
        resolution = traced_at
        onnx_files.save(model, path)
    else:
        from converter.models import tracing

        shapes_fixed = None
        unet = source.load_unet()
        w8a16_layers = getattr(unet, "rkconvert_w8a16_layers", 0)
        resolution = resolution or unet.config.sample_size * VAE_SCALE
        try:
            signature = Signature.of_config(unet.config, resolution)
        except UserError as e:
            raise UserError(f"{source.spec}: {e}") from None
        tracing.trace(unet, resolution, path)
        expected = signature.names
        del unet
        graph, specs = UNET, check_unet(onnx_files.load(path, with_weights=False), path, expected)
    return {"onnx": path.name, "graph": graph, "resolution": resolution, "inputs": specs_to_json(specs), "w8a16_layers": w8a16_layers,
            "weights": f"w8a16: {w8a16_layers} int8 layers, dequantized exactly" if w8a16_layers else "float32",
            "shapes_fixed": shapes_fixed}
