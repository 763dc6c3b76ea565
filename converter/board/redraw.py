"""Redrawing a picture (img2img) as diffusers' StableDiffusionImg2ImgPipeline does, in numpy: the picture as the
VAE encoder takes it, and the latents the sampler starts from, drawn from the seed's generator in diffusers'
order (an AutoencoderKL's latents from its mean and deviation, then the noise) and noised to the first of the
int(steps x strength) steps it runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from png import load_png
from samplers import img2img_skip


def picture(path: Path, resolution: int) -> np.ndarray:
    """The PNG as the encoder's input: (1, 3, H, W) float32 in [-1, 1]; ValueError naming the file unless it is
    `resolution` pixels square (the models' shapes are fixed)."""
    rgb = load_png(path)
    if rgb.shape[:2] != (resolution, resolution):
        raise ValueError(f"{path}: {rgb.shape[1]}x{rgb.shape[0]} px; this bundle draws {resolution}x{resolution}")
    return (rgb.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(127.5) - 1).astype(np.float32)


def start(moments: np.ndarray, latent_channels: int, scaling: float, sampler, steps: int, strength: float,
          generator) -> np.ndarray:
    """The latents to start from, the sampler begun at the strength's step. `moments`: the encoder's output,
    mean and deviation stacked on channels (drawn from, with `generator`), or the latents themselves."""
    if moments.shape[1] == 2 * latent_channels:
        mean, deviation = moments[:, :latent_channels], moments[:, latent_channels:]
        latents = mean + deviation * generator.randn(mean.shape)
    else:
        latents = moments
    sampler.begin(img2img_skip(steps, strength))
    return sampler.add_noise((latents * np.float32(scaling)).astype(np.float32), generator.randn(latents.shape))
