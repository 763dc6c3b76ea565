"""Give a UNet built from a stock config the layer widths its (structurally pruned) weights have.

torch-pruning removes channels from Conv2d / Linear / GroupNorm / LayerNorm weights but leaves the
diffusers config describing the unpruned model, so the shapes must come from the weights. Two module
attributes also record widths and are checked in `forward`: `Upsample2D.channels` and
`Downsample2D.channels` (an assert compares them with the input). A config written from pruned widths
(a single-file checkpoint's, ldm_layout.py) can make a resnet's input and output widths equal where the
unpruned model had them differ: whether a resnet has its 1x1 shortcut is then read from the weights too.
"""

from __future__ import annotations

import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from converter.common.errors import UserError


def _resized(name: str, module: nn.Module, weight: torch.Tensor) -> nn.Module | None:
    """A replacement for `module` whose weight has `weight`'s shape, or None if none is needed."""
    if weight.shape == module.weight.shape:
        return None
    bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.Conv2d) and weight.ndim == 4:
        return nn.Conv2d(weight.shape[1] * module.groups, weight.shape[0], module.kernel_size,
                         module.stride, module.padding, module.dilation, module.groups, bias)
    if isinstance(module, nn.Linear) and weight.ndim == 2:
        return nn.Linear(weight.shape[1], weight.shape[0], bias)
    if isinstance(module, nn.GroupNorm) and weight.ndim == 1:
        channels = weight.shape[0]
        if channels % module.num_groups:
            raise UserError(f"{name}: {channels} channels do not split into the config's "
                            f"{module.num_groups} norm groups")
        return nn.GroupNorm(module.num_groups, channels, module.eps, module.affine)
    if isinstance(module, nn.LayerNorm) and weight.ndim == 1:
        return nn.LayerNorm(weight.shape[0], module.eps, module.elementwise_affine, bias=bias)
    raise UserError(f"{name}.weight has shape {tuple(weight.shape)}, the config gives "
                    f"{tuple(module.weight.shape)}, and a {type(module).__name__} cannot be resized")


def fit_modules_to_weights(unet: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Replace every layer whose weight shape differs from `state_dict`; return their names.

    Replacement is by identity so that modules reachable under two attribute names stay shared.
    """
    _shortcuts_from_weights(unet, state_dict)
    replacements: dict[int, nn.Module] = {}
    names = []
    for name, module in unet.named_modules():
        weight = state_dict.get(f"{name}.weight")
        if weight is None or not isinstance(getattr(module, "weight", None), torch.Tensor):
            continue
        new = _resized(name, module, weight)
        if new is not None:
            replacements[id(module)] = new
            names.append(name)
    for parent in unet.modules():
        for child_name, child in parent._modules.items():
            if child is not None and id(child) in replacements:
                parent._modules[child_name] = replacements[id(child)]
    sync_width_attributes(unet)
    return names


def _shortcuts_from_weights(unet: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    for name, module in unet.named_modules():
        if not isinstance(module, ResnetBlock2D):
            continue
        weight = state_dict.get(f"{name}.conv_shortcut.weight")
        if weight is not None and module.conv_shortcut is None:
            module.conv_shortcut = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:],
                                             bias=f"{name}.conv_shortcut.bias" in state_dict)
        elif weight is None and module.conv_shortcut is not None:
            module.conv_shortcut = None
        module.use_in_shortcut = module.conv_shortcut is not None


def sync_width_attributes(unet: nn.Module) -> None:
    """Make the width attributes diffusers asserts on agree with the (resized) convolutions."""
    for module in unet.modules():
        conv = getattr(module, "conv", None)
        if isinstance(module, (Upsample2D, Downsample2D)) and isinstance(conv, nn.Conv2d):
            module.channels = conv.in_channels
            module.out_channels = conv.out_channels
