"""A VAE in place of the pipeline's own (`--vae PATH`): a fine-tuned `AutoencoderKL` (a diffusers folder, or a
VAE-only single file in the LDM layout such as `vae-ft-mse-840000-ema-pruned.safetensors`), or the tiny
`AutoencoderTiny` (TAESD: about 100x less decoder compute). derived_pipeline.py writes it into the pipeline
folder, with model_index.json naming its class, so the decoder is traced, built, checked and shipped as the
pipeline's own would be (pipeline_models.load_vae reads the class)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from converter.common.digest import file_sha256
from converter.common.errors import UserError
from converter.models import ldm_layout

KINDS = ("AutoencoderKL", "AutoencoderTiny")
CONFIG = "config.json"


@dataclass(frozen=True)
class Vae:
    path: Path  # a diffusers folder (config.json beside its weights) or a single .safetensors file

    @classmethod
    def parse(cls, spec: str) -> Vae:
        path = Path(spec)
        if path.is_dir():
            vae = cls(path)
            vae.kind  # noqa: B018 (refuses a folder of another class now, not after the build has started)
            return vae
        if path.is_file() and path.suffix == ".safetensors":
            return cls(path)
        raise UserError(f"--vae '{spec}': not a diffusers VAE folder (config.json and weights) or a .safetensors "
                        "VAE file" + ("" if path.exists() else ": no such file or directory"))

    @property
    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]

    @property
    def identity(self) -> str:
        return "".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}\n" for f in self.files)

    @cached_property
    def sha256(self) -> str:
        """Of its weights file (a folder's: the one beside config.json)."""
        return file_sha256(next(f for f in self.files if f.suffix in (".safetensors", ".bin")))

    @cached_property
    def kind(self) -> str:
        """The diffusers class: a folder's config says; a single file is an AutoencoderKL in the LDM layout."""
        if not self.path.is_dir():
            return "AutoencoderKL"
        try:
            kind = json.loads((self.path / CONFIG).read_text()).get("_class_name")
        except (OSError, ValueError) as e:
            raise UserError(f"--vae {self.path}: no readable {CONFIG} ({e})") from None
        if kind not in KINDS:
            raise UserError(f"--vae {self.path}: a {kind}; rkconvert builds {' and '.join(KINDS)} decoders")
        return kind

    def load(self, base: Path):
        """The VAE, float32; UserError unless its latents are the base pipeline's (channels)."""
        import diffusers

        from converter.common.weight_variant import variant

        if self.path.is_dir():
            vae = getattr(diffusers, self.kind).from_pretrained(self.path, local_files_only=True,
                                                                variant=variant(self.path)).float().eval()
        else:
            vae = _from_ldm_file(self.path)
        own = json.loads((base / "vae" / CONFIG).read_text()).get("latent_channels", 4)
        if vae.config.latent_channels != own:
            raise UserError(f"--vae {self.path}: its latents have {vae.config.latent_channels} channels, the "
                            f"pipeline's {own} (a VAE for another model family)")
        return vae


def _from_ldm_file(path: Path):
    """A VAE-only file's AutoencoderKL: its keys are the single file's first_stage_model.* without the prefix."""
    from diffusers import AutoencoderKL
    from diffusers.loaders import single_file_utils as ldm

    from converter.models.single_file import key_shapes, load_into
    from converter.models.unet_loading import read_weights

    shapes = key_shapes(path)
    if not any(k.startswith(("encoder.down.", "decoder.up.")) for k in shapes):
        raise UserError(f"--vae {path}: not a VAE file (no encoder.down.* / decoder.up.* tensors)")
    state_dict = {ldm_layout.VAE + k: v for k, v in read_weights(path, trust_pickle=False).items()}
    config = ldm_layout.vae_config({ldm_layout.VAE + k: v for k, v in shapes.items()})
    vae = AutoencoderKL.from_config(config)
    load_into(vae, ldm.convert_ldm_vae_checkpoint(state_dict, config), path, "VAE")
    return vae.eval()
