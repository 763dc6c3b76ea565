"""`rkconvert quantize`: W8A16 weight-only PTQ of a UNet, written in the two forms tools exchange.

Output folder: `config.json` + `diffusion_pytorch_model.safetensors` (int8 weights + scales, see
quantization/w8a16_checkpoint.py), `unet-w8a16.onnx` (traced at --resolution, weight-only DequantizeLinear), and
`quantize.json` (per layer: weight SQNR, how many channels took the histogram range).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from converter.common import onnx_files
from converter.models import tracing
from converter.models.model_source import ModelSource
from converter.quantization import weight_dequantize
from converter.quantization.w8a16_checkpoint import FORMAT, dequantized, int8_layers, quantize_unet

ONNX_NAME = "unet-w8a16.onnx"


def quantize(source: ModelSource, out: Path, resolution: int | None) -> dict:
    """Write the quantized forms of `source` into `out` (atomically: a temp folder, then a rename)."""
    unet = source.load_unet()
    state, rows = quantize_unet(unet)
    resolution = resolution or unet.config.sample_size * tracing.VAE_SCALE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        unet.save_config(tmp)
        save_file(state, tmp / "diffusion_pytorch_model.safetensors", metadata={"format": FORMAT})
        unet.load_state_dict(dequantized(state, tmp), strict=True)
        tracing.trace(unet, resolution, tmp / "traced.onnx")
        model, count = weight_dequantize.add(onnx_files.load(tmp / "traced.onnx"), int8_layers(state))
        for f in onnx_files.files_of(tmp / "traced.onnx"):
            f.unlink()
        onnx_files.save(model, tmp / ONNX_NAME)
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
            "safetensors_bytes": (tmp / "diffusion_pytorch_model.safetensors").stat().st_size,
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

