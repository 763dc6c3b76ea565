"""Trace a diffusers UNet to a static-shape ONNX graph (batch 1, opset 17, TorchScript exporter).

The TorchScript exporter is used rather than torch.export/dynamo: its graphs are what rknn-toolkit2
2.5.0 was measured on (`../shared/rknn-facts.md`), and it keeps diffusers module paths in node names
(`/down_blocks.0/attentions.0/...`), which every report uses to point back into the model.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch

from converter.common import onnx_files
from converter.common.errors import UserError

OPSET = 17
INPUT_NAMES = ("sample", "timestep", "encoder_hidden_states")
OUTPUT_NAME = "out_sample"
TEXT_TOKENS = 77  # CLIP's context length, what SD text encoders emit
VAE_SCALE = 8


def latent_size(unet, resolution: int) -> int:
    """Latent edge for a pixel resolution; every down stage must halve it exactly."""
    multiple = VAE_SCALE * 2 ** (len(unet.config.block_out_channels) - 1)
    if resolution <= 0 or resolution % multiple:
        raise UserError(f"--resolution {resolution}: must be a positive multiple of {multiple} for this UNet")
    return resolution // VAE_SCALE


def example_inputs(unet, resolution: int) -> tuple[torch.Tensor, ...]:
    latent = latent_size(unet, resolution)
    return (
        torch.zeros(1, unet.conv_in.in_channels, latent, latent),
        torch.tensor([999.0]),
        torch.zeros(1, TEXT_TOKENS, unet.config.cross_attention_dim),
    )


def trace(unet, resolution: int, path: Path) -> list[Path]:
    """Export `unet` at `resolution` pixels to `path`; return the files written."""
    inputs = example_inputs(unet, resolution)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings for every Python-level shape check in diffusers
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(unet, inputs, str(raw), kwargs={"return_dict": False},
                          input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
        # Past 2 GB torch writes a file per weight: streamed into one, never all in memory beside the UNet.
        return onnx_files.save(onnx_files.load_lazy(raw), path)
