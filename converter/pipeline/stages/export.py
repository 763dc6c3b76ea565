"""Stage `export`: the model as a static-shape float32 ONNX graph (traced, or a user's ONNX checked and
copied); W8A16 weights, from either form, arrive dequantized exactly (int8 x scale)."""

from __future__ import annotations

from pathlib import Path

from converter.pipeline.request import BuildRequest
from converter.common import onnx_files
from converter.common.errors import UserError
from converter.models.unet_interface import check_unet, specs_to_json
from converter.quantization import weight_dequantize


def run(req: BuildRequest, tmp: Path) -> dict:
    path = tmp / "model.onnx"
    source = req.source
    if source.kind == "onnx":
        model, int8 = weight_dequantize.fold(onnx_files.load_lazy(source.path), source.path)
        w8a16_layers = len(int8)
        specs = check_unet(model, source.path)
        resolution = specs["sample"][0][-1] * 8
        if req.resolution not in (None, resolution):
            raise UserError(f"{source.path}: shapes are fixed at {resolution} px; drop --resolution or re-export")
        onnx_files.save(model, path)
    else:
        from converter.models import tracing

        unet = source.load_unet()
        w8a16_layers = getattr(unet, "rkconvert_w8a16_layers", 0)
        resolution = req.resolution or unet.config.sample_size * tracing.VAE_SCALE
        tracing.trace(unet, resolution, path)
        del unet
        specs = check_unet(onnx_files.load(path, with_weights=False), path)
    return {"onnx": path.name, "resolution": resolution, "inputs": specs_to_json(specs), "w8a16_layers": w8a16_layers,
            "weights": f"w8a16: {w8a16_layers} int8 layers, dequantized exactly" if w8a16_layers else "float32"}
