"""Stage `export`: the model as a static-shape ONNX graph (traced, or a user's ONNX checked and copied)."""

from __future__ import annotations

from pathlib import Path

from .. import onnx_files
from ..build_request import BuildRequest
from ..errors import UserError
from ..unet_interface import check_unet, specs_to_json


def run(req: BuildRequest, tmp: Path) -> dict:
    path = tmp / "model.onnx"
    source = req.source
    if source.kind == "onnx":
        model = onnx_files.load(source.path)
        specs = check_unet(model, source.path)
        resolution = specs["sample"][0][-1] * 8
        if req.resolution not in (None, resolution):
            raise UserError(f"{source.path}: shapes are fixed at {resolution} px; drop --resolution or re-export")
        onnx_files.save(model, path)
    else:
        from .. import tracing

        unet = source.load_unet()
        resolution = req.resolution or unet.config.sample_size * tracing.VAE_SCALE
        tracing.trace(unet, resolution, path)
        del unet
        specs = check_unet(onnx_files.load(path, with_weights=False), path)
    return {"onnx": path.name, "resolution": resolution, "inputs": specs_to_json(specs)}
