"""A single-file Stable Diffusion checkpoint (`v1-5-pruned-emaonly.safetensors`, DreamShaper, SD-Turbo's file)
as a diffusers pipeline folder, so that calibration, the image check, `generate` and `release` read it as they
read any pipeline folder.

The key renaming is diffusers' own single-file conversion (diffusers.loaders.single_file_utils), fed configs
read from the weights (ldm_layout.py) instead of a hub download; the tokenizer is CLIP's BPE from a package
(clip_vocabulary.py). The folder is written once per file (its path, size and modification time) under the
cache, to a temporary name renamed at the end, and reused after that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from converter.common.errors import UserError
from converter.models import ldm_layout
from converter.models.clip_vocabulary import EOS, save_tokenizer

if TYPE_CHECKING:  # torch only in annotations here: a --help or a bad --model does not pay its import
    import torch

SUFFIXES = (".safetensors", ".ckpt")
EMA = "model_ema."
FORMAT = 1  # bump when the folder written here changes, so cached folders are written again
SCHEDULER = {"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "clip_sample": False,
             "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon"}
MODEL_INDEX = {"_class_name": "StableDiffusionPipeline", "requires_safety_checker": False,
               "feature_extractor": [None, None], "safety_checker": [None, None], "image_encoder": [None, None],
               "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
               "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
               "vae": ["diffusers", "AutoencoderKL"]}


def cache_root() -> Path:
    if os.environ.get("RKCONVERT_CACHE"):
        return Path(os.environ["RKCONVERT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rkconvert"


def cached_folder(path: Path, ema: bool = True) -> Path:
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{FORMAT}:{ema}".encode()).hexdigest()[:12]
    return cache_root() / "single-file" / f"{path.stem}-{key}"


def key_shapes(path: Path) -> dict[str, tuple] | None:
    """Every tensor's shape of a .safetensors file, read from its header alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None


def holds_pipeline(shapes: dict[str, tuple]) -> bool:
    """Whether the keys are a single file's (a UNet under model.diffusion_model., or another model of that
    family that ldm_layout.family names), rather than a bare diffusers UNet state dict."""
    return not any(k.startswith(("conv_in.", "down_blocks.")) for k in shapes)


def holds_ema(shapes: dict[str, tuple]) -> bool:
    """Whether the file keeps its UNet's EMA weights beside the trained ones (model_ema.*, as SD 1.5's
    v1-5-pruned does), as diffusers tells them apart: over 100 such tensors."""
    return sum(k.startswith(EMA) for k in shapes) > 100


def pipeline_folder(path: Path, state_dict: dict[str, torch.Tensor] | None = None, ema: bool = True) -> Path:
    """The pipeline folder of a single-file checkpoint, written on first use (`state_dict`: the file's
    tensors when the caller already read them); of a file holding EMA weights, with the EMA UNet unless not
    `ema`."""
    folder = cached_folder(path, ema)
    if (folder / "model_index.json").is_file():
        return folder
    if state_dict is None:
        from converter.models.unet_loading import read_weights

        state_dict = read_weights(path, trust_pickle=False)
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    family = ldm_layout.family(shapes, path)
    print(f"rkconvert: {path.name}: {ldm_layout.FAMILIES[family]} single-file checkpoint; writing it as a "
          f"pipeline folder once, into {folder}", file=sys.stderr, flush=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        _write(scratch, state_dict, shapes, family, path, ema)
        shutil.rmtree(folder, ignore_errors=True)
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def _write(folder: Path, state_dict: dict, shapes: dict, family: str, origin: Path, ema: bool) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler
    from diffusers.loaders import single_file_utils as ldm
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from converter.models.unet_loading import unet_from_state_dict

    unet_config = ldm_layout.unet_config(shapes, family)
    unet_weights = ldm.convert_ldm_unet_checkpoint(state_dict, unet_config, extract_ema=ema)
    # refuses weights the config does not describe; the saved config has every field diffusers defaults
    unet_from_state_dict(unet_config, unet_weights, origin).save_config(folder / "unet")
    save_file({k: v.contiguous() for k, v in unet_weights.items()},
              folder / "unet" / "diffusion_pytorch_model.safetensors")

    vae_config = ldm_layout.vae_config(shapes)
    vae = AutoencoderKL.from_config(vae_config)
    load_into(vae, ldm.convert_ldm_vae_checkpoint(state_dict, vae_config), origin, "VAE")
    vae.save_pretrained(folder / "vae")

    text = CLIPTextModel(CLIPTextConfig(**ldm_layout.text_config(shapes, family)))
    weights = (ldm.convert_ldm_clip_checkpoint(state_dict) if family == "sd1"
               else ldm.convert_open_clip_checkpoint(text, state_dict))
    load_into(text, weights, origin, "text encoder")
    text.save_pretrained(folder / "text_encoder")

    save_tokenizer(folder / "tokenizer", pad_token=EOS if family == "sd1" else "!")
    DDIMScheduler.from_config(SCHEDULER).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=1))


def load_into(module: torch.nn.Module, weights: dict[str, torch.Tensor], origin: Path, what: str) -> None:
    """Load what the module has; the file's extras (SD 2.x's last OpenCLIP block, its text projection, CLIP's
    position ids) are not part of what SD conditions on."""
    own = module.state_dict()
    if not any(k.startswith("text_model.") for k in own):  # transformers 5 names CLIP without the files' prefix
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    missing = sorted(set(own) - set(weights))
    wrong = sorted(k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape))
    if missing or wrong:
        example = (missing or wrong)[0]
        raise UserError(f"{origin}: the {what} does not fit the layout read from its weights: "
                        f"{len(missing)} missing and {len(wrong)} misshapen tensors (e.g. {example})")
    module.load_state_dict({k: weights[k].float() for k in own}, strict=True)
