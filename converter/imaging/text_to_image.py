"""Prompts to images with a diffusers pipeline folder's own parts around any UNet module.

The tokenizer, text encoder, scheduler and VAE come from the folder (the text states and the decoding
may come from elsewhere: the parts' .rknn in the simulator, builds/stages/images.py); the UNet is
whatever module is given: the folder's own in torch, or a RuntimeUNet over ONNX Runtime or the
toolkit's simulator. Each image has its own seeded generator,
so the same prompt and seed start from the same noise whichever UNet denoises it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from converter.common.errors import UserError
from converter.common.quiet_loading import quiet
from converter.common.weight_variant import variant


def scheduler(folder: Path, name: str | None = None):
    """diffusers' scheduler of the folder's scheduler_config.json, as its own class or as the sampler `name`
    (a board samplers.NAMES key) reads it: only those the board runner samples with."""
    import diffusers

    from converter.board.samplers import SamplerError, class_name

    config = folder / "scheduler" / "scheduler_config.json"
    try:
        chosen = class_name(config, name)
    except OSError as e:
        raise UserError(f"{config}: unreadable ({e})") from None
    except (SamplerError, ValueError) as e:
        raise UserError(str(e)) from None
    return getattr(diffusers, chosen).from_pretrained(folder / "scheduler", local_files_only=True)


def pipeline(folder: Path, unet: torch.nn.Module, sampler: str | None = None, img2img: bool = False):
    """diffusers' text-to-image pipeline of `folder` with `unet`, or its image-to-image one (`img2img`: the VAE's
    encoder turns the starting image into latents, noised to the strength's timestep)."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    from converter.models.pipeline_models import load_vae

    try:
        with quiet():
            parts = {"tokenizer": CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
                     "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True,
                                                                   dtype=torch.float32,  # transformers 5: else the file's
                                                                   variant=variant(folder / "text_encoder")).eval(),
                     "vae": load_vae(folder), "scheduler": scheduler(folder, sampler)}
    except (OSError, ValueError) as e:
        raise UserError(f"{folder}: not a text-to-image pipeline folder ({str(e).splitlines()[0]})") from None
    kind = StableDiffusionImg2ImgPipeline if img2img else StableDiffusionPipeline
    pipe = kind(**parts, unet=unet, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def denoise(pipe, text: dict, seeds: list[int], steps: int, guidance_scale: float, resolution: int,
            on_step: Callable[[int, int], None] | None, output_type: str, init: tuple | None = None):
    """The pipeline's denoising loop, all prompts together: `text` is {"prompt": [...]} or the text states
    ({"prompt_embeds", "negative_prompt_embeds"}: another text encoder's); output_type "np" (images in [0, 1])
    or "latent"; `on_step(done, steps)` after every denoising step. `init`: (PIL image, strength) to redraw, with
    an image-to-image pipeline (its size is the image's)."""
    generators = [torch.Generator().manual_seed(s) for s in seeds]

    def callback(pipe, step, timestep, tensors):
        if on_step:
            on_step(step + 1, steps)
        return tensors

    with torch.no_grad():
        start = {"image": init[0], "strength": init[1]} if init else {"height": resolution, "width": resolution}
        return pipe(**text, **start, num_inference_steps=steps,
                    guidance_scale=guidance_scale, generator=generators, output_type=output_type,
                    callback_on_step_end=callback).images


def token_ids(folder: Path, prompts: list[str]) -> np.ndarray:
    """(N, tokens) int64: the ids the folder's pipeline gives its text encoder (encode_prompt's tokenizing)."""
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="np").input_ids.astype(np.int64)


def vae_scaling_factor(folder: Path) -> float:
    """What the pipeline divides its latents by before the VAE decodes them (AutoencoderKL's default: SD's)."""
    return json.loads((folder / "vae" / "config.json").read_text()).get("scaling_factor", 0.18215)


def from_decoder(image: np.ndarray) -> np.ndarray:
    """A VAE decoder's (N, 3, H, W) output in [-1, 1] as the pipeline's "np" images: (N, H, W, 3) in [0, 1]."""
    return np.clip(image.transpose(0, 2, 3, 1) / 2 + 0.5, 0, 1)


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round(images * 255), 0, 255).astype(np.uint8)
