"""W8A16 checkpoints: int8 weights + per-output-channel float32 scales, as a diffusers folder.

Layout (what `rkconvert quantize` writes and what it reads back): `config.json` and
`diffusion_pytorch_model.safetensors` where every quantized Conv2d / Linear has `<layer>.weight`
(int8, symmetric, [-127, 127]) and `<layer>.weight_scale` (float32, one per output channel), the
rest as float32, and the safetensors metadata `format` = FORMAT.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from converter.common.errors import UserError
from converter.w8a16.int8_weights import dequantize, quantize

FORMAT = "rkconvert-w8a16-symmetric-per-channel"
SCALE_SUFFIX = "_scale"


def quantize_unet(unet: nn.Module) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """(state dict with int8 weights and scales, one row per quantized layer)."""
    state = {k: v.detach().float().contiguous() for k, v in unet.state_dict().items()}
    rows = []
    for name, module in unet.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            q, scale, info = quantize(module.weight.detach().float().numpy())
            state[f"{name}.weight"] = torch.from_numpy(q)
            state[f"{name}.weight{SCALE_SUFFIX}"] = torch.from_numpy(scale)
            rows.append({"layer": name, "type": type(module).__name__, **info})
    return state, rows


def is_w8a16(state: dict[str, torch.Tensor]) -> bool:
    return any(v.dtype == torch.int8 for v in state.values())


def dequantized(state: dict[str, torch.Tensor], origin) -> dict[str, torch.Tensor]:
    """The float32 state dict a W8A16 checkpoint stands for (weight = int8 x scale, exactly)."""
    out = {}
    for key, value in state.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        if value.dtype != torch.int8:
            out[key] = value
            continue
        scale = state.get(key + SCALE_SUFFIX)
        if scale is None or scale.dtype != torch.float32 or scale.ndim != 1 or scale.shape[0] != value.shape[0]:
            raise UserError(f"{origin}: int8 tensor {key} has no float32 per-output-channel {key}{SCALE_SUFFIX}; "
                            "rkconvert reads symmetric per-channel W8A16 (int8 weight + scale), not this layout")
        out[key] = torch.from_numpy(dequantize(value.numpy(), scale.numpy()))
    stray = [k for k in state if k.endswith(SCALE_SUFFIX) and state.get(k[:-len(SCALE_SUFFIX)]) is None]
    if stray:
        raise UserError(f"{origin}: scale {stray[0]} belongs to no int8 weight")
    return out


def int8_layers(state: dict[str, torch.Tensor]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{weight key: (int8 weight, scale)} of a W8A16 state dict."""
    return {k: (v.numpy(), state[k + SCALE_SUFFIX].numpy()) for k, v in state.items() if v.dtype == torch.int8}
