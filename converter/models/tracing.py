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
GUIDANCE_INPUT = "timestep_cond"  # an LCM-distilled UNet's guidance-scale embedding (config time_cond_proj_dim)
OUTPUT_NAME = "out_sample"
TEXT_TOKENS = 77  # CLIP's context length, what SD text encoders emit
VAE_SCALE = 8


def latent_size(unet, resolution: int) -> int:
    """Latent edge for a pixel resolution; every down stage must halve it exactly."""
    multiple = VAE_SCALE * 2 ** (len(unet.config.block_out_channels) - 1)
    if resolution <= 0 or resolution % multiple:
        raise UserError(f"--resolution {resolution}: must be a positive multiple of {multiple} for this UNet")
    return resolution // VAE_SCALE


def input_names(unet) -> tuple[str, ...]:
    """The inputs the traced graph must take: an LCM UNet's guidance embedding too, which a trace without it
    silently drops (diffusers then skips the UNet's cond_proj)."""
    return INPUT_NAMES + ((GUIDANCE_INPUT,) if getattr(unet.config, "time_cond_proj_dim", None) else ())


def example_inputs(unet, resolution: int) -> dict[str, torch.Tensor]:
    latent = latent_size(unet, resolution)
    inputs = {"sample": torch.zeros(1, unet.conv_in.in_channels, latent, latent),
              "timestep": torch.tensor([999.0]),
              "encoder_hidden_states": torch.zeros(1, TEXT_TOKENS, unet.config.cross_attention_dim)}
    if GUIDANCE_INPUT in input_names(unet):
        inputs[GUIDANCE_INPUT] = torch.zeros(1, unet.config.time_cond_proj_dim)
    return inputs


def trace(unet, resolution: int, path: Path) -> list[Path]:
    """Export `unet` at `resolution` pixels to `path`; return the files written."""
    inputs = example_inputs(unet, resolution)
    names = input_names(unet)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings for every Python-level shape check in diffusers
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(unet, tuple(inputs[n] for n in INPUT_NAMES),
                          str(raw), kwargs={**{n: inputs[n] for n in names[len(INPUT_NAMES):]}, "return_dict": False},
                          input_names=list(names), output_names=[OUTPUT_NAME],
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
        # Past 2 GB torch writes a file per weight: streamed into one, never all in memory beside the UNet.
        return onnx_files.save(onnx_files.load_lazy(raw), path)
