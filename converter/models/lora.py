"""LoRAs fused into a pipeline before export (`--lora FILE[:SCALE]`): how people make a checkpoint their own,
and how LCM-LoRA makes any SD 1.5 fine-tune a 4-step model.

diffusers reads the file (its `lora_state_dict`: the diffusers and PEFT layouts, and kohya / A1111's
`lora_unet_*` / `lora_te_*` with their alphas), peft injects it, `fuse_lora` adds it to the weights at its
scale; derived_pipeline.py saves the fused UNet and text encoder as a pipeline folder that every stage reads. A LoRA that
does not fit the base is refused before anything is written: a layer it names that the model lacks (a
LoRA for another architecture), or a layer whose widths differ (SD 2.x's 1024-wide text states on SD 1.5).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from converter.common.digest import file_sha256
from converter.common.errors import UserError

SUFFIXES = (".safetensors", ".bin", ".pt")
DIFFUSERS_STEM = "pytorch_lora_weights"  # save_lora_weights' file name, whatever the LoRA
FUSED = ["unet", "text_encoder"]  # the pipeline's models a LoRA changes; the others are the base's files


@dataclass(frozen=True)
class Lora:
    path: Path
    scale: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> Lora:
        """FILE or FILE:SCALE (UserError for a missing file or a scale that is not a number)."""
        path, scale = spec, 1.0
        head, sep, tail = spec.rpartition(":")
        if sep and not Path(spec).exists():
            try:
                path, scale = head, float(tail)
            except ValueError:
                raise UserError(f"--lora '{spec}': the scale after ':' must be a number (FILE[:SCALE])") from None
        found = Path(path)
        if not found.is_file():
            raise UserError(f"--lora '{spec}': no such file")
        if found.suffix not in SUFFIXES:
            raise UserError(f"--lora '{spec}': a LoRA is a {', '.join(SUFFIXES)} file")
        return cls(found, scale)

    @property
    def spec(self) -> str:
        """As the option takes it (a failed build names its diagnose command with it)."""
        return str(self.path) if self.scale == 1.0 else f"{self.path}:{self.scale:g}"

    @property
    def name(self) -> str:
        """What a build folder calls it: the file's stem, or its folder's name for diffusers' fixed file name."""
        return self.path.parent.name if self.path.stem == DIFFUSERS_STEM else self.path.stem

    @property
    def lcm(self) -> bool:
        """An LCM-LoRA, by its name: published ones carry no mark inside (latent-consistency ships
        lcm-lora-sdv1-5/pytorch_lora_weights.safetensors), so the file's or its folder's name says "lcm"."""
        return any("lcm" in name.lower() for name in (self.path.stem, self.path.parent.name))

    @property
    def identity(self) -> str:
        st = self.path.stat()
        return f"{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{self.scale!r}"

    @cached_property
    def sha256(self) -> str:
        return file_sha256(self.path)


def fuse(base: Path, loras: tuple[Lora, ...]) -> dict:
    """The UNet and text encoder of the pipeline folder `base` with `loras` fused at their scales, by name."""
    import torch
    from diffusers import StableDiffusionPipeline

    from converter.common.weight_variant import variant

    pipe = StableDiffusionPipeline.from_pretrained(base, local_files_only=True, dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False,
                                                   variant=variant(base / "unet"))
    names = [f"lora{i}" for i in range(len(loras))]
    for name, lora in zip(names, loras):
        _load(pipe, lora, name)
    pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()
    return _models(pipe)


def _load(pipe, lora: Lora, name: str) -> None:
    """Load `lora` as adapter `name`; UserError, in one line, for a file that is no LoRA or does not fit."""
    try:
        state_dict, _ = pipe.lora_state_dict(str(lora.path))
    except Exception as e:  # diffusers raises ValueError, KeyError or OSError for what it cannot read
        raise UserError(f"{lora.path}: not a LoRA diffusers reads ({_first_line(e)})") from None
    changed = _layers_changed(pipe, lora, state_dict)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peft's note that a config names more layers than a state dict
            pipe.load_lora_weights(str(lora.path), adapter_name=name)  # the path: diffusers keeps kohya's alphas
    except (RuntimeError, ValueError) as e:
        raise UserError(f"{lora.path}: does not fit this model ({_first_line(e)})") from None
    # diffusers drops, with a warning at most, tensors it cannot place (one file mixing two key layouts):
    # every layer the file changes must hold the adapter now.
    models = _models(pipe)
    layers = {prefix: dict(model.named_modules()) for prefix, model in models.items()}
    unloaded = sorted(f"{prefix}.{owner}" for prefix, owner in changed
                      if name not in getattr(layers[prefix][owner], "lora_A", {}))
    if unloaded:
        raise UserError(f"{lora.path}: diffusers loaded nothing into {len(unloaded)} of the {len(changed)} layers it "
                        f"changes, e.g. {unloaded[0]} (keys of two layouts in one file?)")


def _models(pipe) -> dict:
    return {name: getattr(pipe, name) for name in FUSED}


def _layers_changed(pipe, lora: Lora, state_dict: dict) -> set[tuple[str, str]]:
    """The (model, layer) pairs the LoRA changes; UserError unless each is in the model with the widths of
    the LoRA's down (A) and up (B) matrices."""
    changed, missing, widths = set(), set(), []
    for prefix, model in _models(pipe).items():
        layers = dict(model.named_modules())
        for key, tensor in _as_peft(prefix, state_dict).items():
            owner, down = _layer_of(key)
            if owner is None:
                continue
            layer = layers.get(owner)
            if layer is None:
                missing.add(f"{prefix}.{owner}")
                continue
            changed.add((prefix, owner))
            width = getattr(layer, "in_features", getattr(layer, "in_channels", None)) if down else \
                getattr(layer, "out_features", getattr(layer, "out_channels", None))
            taken = tensor.shape[1] if down else tensor.shape[0]
            if width is not None and tensor.ndim >= 2 and taken != width:
                widths.append(f"{prefix}.{owner} is {width} wide, the LoRA's {taken}")
    if not changed and not missing:
        raise UserError(f"{lora.path}: no LoRA weights in it (lora_down/lora_up or lora_A/lora_B tensors)")
    if missing:
        raise UserError(f"{lora.path}: {len(missing)} layer(s) it changes are not in this model, e.g. "
                        f"{sorted(missing)[0]}: a LoRA for another architecture?")
    if widths:
        raise UserError(f"{lora.path}: widths differ from this model's ({sorted(widths)[0]}): a LoRA for another "
                        "base (SD 1.x / 2.x / XL)?")
    return changed


def _as_peft(prefix: str, state_dict: dict) -> dict:
    """The part of diffusers' reading of a LoRA file for one model, in PEFT's keys (layer.lora_A.weight), as
    diffusers converts it when loading (kohya files read as attention-processor keys: attn2.processor.to_k_lora)."""
    from diffusers.utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    part = {k[len(prefix) + 1:]: v for k, v in state_dict.items() if k.startswith(f"{prefix}.")}
    if not part or any(".lora_A." in k for k in part):
        return part
    return convert_unet_state_dict_to_peft(part) if prefix == "unet" else convert_state_dict_to_peft(part)


def _layer_of(key: str) -> tuple[str | None, bool | None]:
    """('down_blocks.0....to_q', True) for a down (A) matrix's key; the layer and False for an up (B) one."""
    for mark, down in ((".lora_A.", True), (".lora_B.", False)):
        if mark in key:
            return key.split(mark)[0], down
    return None, None


def _first_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
