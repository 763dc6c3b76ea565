"""Load a diffusers `UNet2DConditionModel` from the places users keep one.

- a built-in preset (seeded random weights);
- a diffusers folder: `config.json` + `diffusion_pytorch_model.safetensors` (or `.bin`);
- a weights file (`.safetensors`, or a torch state dict `.pt/.pth/.bin`) with a config beside it or given;
- a whole pickled module (torch-pruning's `torch.save(model)`), only when the user trusts the file,
  since unpickling runs code from it.

Layer widths come from the weights, not the config, so structurally pruned UNets load too; W8A16
checkpoints (int8 weights + per-channel scales, converter/w8a16_checkpoint.py) load dequantized.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from converter.common.errors import UserError
from converter.models.presets import preset_config
from converter.models.pruned_shapes import fit_modules_to_weights
from converter.w8a16.checkpoint import dequantized, is_w8a16

UNET_CLASS = "UNet2DConditionModel"
# the fp16 variant's last: a folder saved with variant="fp16" holds only those (read as float32)
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")
STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def load_preset(name: str, seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel.from_config(preset_config(name)).eval()


def read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable JSON config ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(config).__name__}")
    kind = config.get("_class_name", UNET_CLASS)
    if kind != UNET_CLASS or "block_out_channels" not in config:
        raise UserError(f"{path}: a {kind} config, not a diffusers {UNET_CLASS} config")
    return config


def folder_weights(folder: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder}: no UNet weights ({' or '.join(WEIGHT_NAMES)})")


def read_weights(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor] | torch.nn.Module:
    """A state dict, or (with `trust_pickle`) whatever module the file pickles."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e) and "Unsupported" in str(e):
            raise UserError(f"{path}: holds pickled Python objects, not only tensors; loading it "
                            "runs code from the file: pass --trust-pickle if you trust its source") from None
        raise UserError(f"{path}: not a readable torch file ({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable torch file ({str(e).splitlines()[0]})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise UserError(f"{path}: neither a state dict of tensors nor a pickled {UNET_CLASS}")


def unet_from_state_dict(config: dict, state_dict: dict[str, torch.Tensor], origin: Path) -> UNet2DConditionModel:
    int8_layers = 0
    if is_w8a16(state_dict):
        int8_layers = sum(v.dtype == torch.int8 for v in state_dict.values())
        state_dict = dequantized(state_dict, origin)
    try:
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(config)
            fit_modules_to_weights(unet, state_dict)
    except (ValueError, TypeError, AttributeError) as e:
        raise UserError(f"{origin}: config does not describe a buildable {UNET_CLASS} ({e})") from None
    expected = set(unet.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []
        raise UserError(f"{origin}: weights do not fit the {UNET_CLASS} config: {', '.join(parts)} keys")
    unet.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True, assign=True)
    unet.rkconvert_w8a16_layers = int8_layers  # read by the export stage and the report
    return unet.eval()


def load_folder(folder: Path) -> UNet2DConditionModel:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UserError(f"{folder}: not a diffusers UNet folder (no config.json)")
    config = read_config(config_path)
    weights = folder_weights(folder)
    state_dict = read_weights(weights, trust_pickle=False)
    return unet_from_state_dict(config, state_dict, weights)


def load_weights_file(path: Path, config_path: Path | None, trust_pickle: bool) -> UNet2DConditionModel:
    weights = read_weights(path, trust_pickle)
    if isinstance(weights, torch.nn.Module):
        if not isinstance(weights, UNet2DConditionModel):
            raise UserError(f"{path}: pickles a {type(weights).__name__}, not a {UNET_CLASS}")
        return weights.float().eval()
    config_path = config_path or path.parent / "config.json"
    if not config_path.is_file():
        raise UserError(f"{path}: a state dict needs its UNet config: no {config_path}; pass --config")
    return unet_from_state_dict(read_config(config_path), weights, path)
