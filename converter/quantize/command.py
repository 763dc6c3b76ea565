"""`rkconvert quantize`: W8A16 weight-only PTQ of a UNet, written in the two forms tools exchange.

Output folder: `config.json` + `diffusion_pytorch_model.safetensors` (int8 weights + scales, see
w8a16/checkpoint.py), `unet-w8a16.onnx` (traced at --resolution, weight-only DequantizeLinear), and
`quantize.json` (per layer: weight SQNR, how many channels took the histogram range). A pipeline
folder (the demo) stays one: its other parts are copied and the UNet's files go in `unet/`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from converter.common import onnx_files
from converter.common.errors import UserError
from converter.models import tracing
from converter.models.family import VAE_SCALE
from converter.models.model_source import ModelSource
from converter.w8a16 import weight_dequantize
from converter.w8a16.checkpoint import FORMAT, dequantized, int8_layers, quantize_unet

ONNX_NAME = "unet-w8a16.onnx"


def quantize(source: ModelSource, out: Path, resolution: int | None) -> dict:
    """Write the quantized forms of `source` into `out` (atomically: a temp folder, then a rename)."""
    if source.kind == "onnx":
        raise UserError(f"{source.path}: quantize reads a UNet into torch (a diffusers folder or pipeline, a weights "
                        "file, a preset), not an ONNX graph: quantize the model it was exported from")
    unet = source.load_unet()
    state, rows = quantize_unet(unet)
    resolution = resolution or unet.config.sample_size * VAE_SCALE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        folder = tmp
        if source.pipeline:
            for part in source.pipeline.iterdir():
                if part.name != "unet":
                    (shutil.copytree if part.is_dir() else shutil.copyfile)(part, tmp / part.name)
            folder = tmp / "unet"
            folder.mkdir()
        unet.save_config(folder)
        save_file(state, folder / "diffusion_pytorch_model.safetensors", metadata={"format": FORMAT})
        unet.load_state_dict(dequantized(state, folder), strict=True)
        tracing.trace(unet, resolution, folder / "traced.onnx")
        model, count = weight_dequantize.add(onnx_files.load(folder / "traced.onnx"), int8_layers(state))
        for f in onnx_files.files_of(folder / "traced.onnx"):
            f.unlink()
        onnx_files.save(model, folder / ONNX_NAME)
        fp32_bytes = sum(v.numel() * 4 for k, v in unet.state_dict().items())
        summary = {
            "format": FORMAT,
            "layers": len(rows),
            "onnx_dequantize_nodes": count,
            "weight_sqnr_db_mean": float(np.mean([r["sqnr_db"] for r in rows])),
            "weight_sqnr_db_min": float(min(r["sqnr_db"] for r in rows)),
            "histogram_channels": sum(r["histogram_channels"] for r in rows),
            "channels": sum(r["channels"] for r in rows),
            "fp32_weight_bytes": fp32_bytes,
            "safetensors_bytes": (folder / "diffusion_pytorch_model.safetensors").stat().st_size,
            "onnx": str((folder / ONNX_NAME).relative_to(tmp)),
            "resolution": resolution,
            "per_layer": rows,
        }
        (tmp / "quantize.json").write_text(json.dumps(summary, indent=1))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary

