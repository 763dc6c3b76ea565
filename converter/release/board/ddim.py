"""The DDIM sampler (eta 0, epsilon prediction) in numpy, from a diffusers `scheduler_config.json`:
the steps StableDiffusionPipeline takes with DDIMScheduler, without torch or diffusers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class Ddim:
    def __init__(self, config_path: Path):
        c = json.loads(Path(config_path).read_text())
        unsupported = {k: c.get(k) for k, ok in (("prediction_type", "epsilon"), ("clip_sample", False),
                                                  ("thresholding", False), ("rescale_betas_zero_snr", False))
                       if c.get(k, ok) != ok}
        if c.get("_class_name") != "DDIMScheduler" or unsupported:
            raise ValueError(f"{config_path}: {c.get('_class_name')} {unsupported or ''}: this runner samples "
                             "with DDIM, epsilon prediction, no clipping or thresholding")
        self.train_steps = c["num_train_timesteps"]
        if c.get("beta_schedule") == "scaled_linear":
            betas = np.linspace(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, self.train_steps, dtype=np.float32) ** 2
        elif c.get("beta_schedule") == "linear":
            betas = np.linspace(c["beta_start"], c["beta_end"], self.train_steps, dtype=np.float32)
        else:
            raise ValueError(f"{config_path}: beta_schedule {c.get('beta_schedule')!r} (scaled_linear or linear)")
        self.alphas_cumprod = np.cumprod(1.0 - betas, dtype=np.float32)
        self.final = np.float32(1.0) if c.get("set_alpha_to_one", True) else self.alphas_cumprod[0]
        self.offset = c.get("steps_offset", 0)
        self.spacing = c.get("timestep_spacing", "leading")

    def timesteps(self, steps: int) -> np.ndarray:
        if self.spacing == "leading":
            return (np.arange(steps) * (self.train_steps // steps)).round()[::-1].astype(np.int64) + self.offset
        if self.spacing == "trailing":
            return np.round(np.arange(self.train_steps, 0, -self.train_steps / steps)).astype(np.int64) - 1
        if self.spacing == "linspace":
            return np.linspace(0, self.train_steps - 1, steps).round()[::-1].astype(np.int64)
        raise ValueError(f"timestep_spacing {self.spacing!r}: leading, trailing or linspace")

    def step(self, eps: np.ndarray, t: int, x: np.ndarray, steps: int) -> np.ndarray:
        """x at the previous timestep, from the model's noise estimate `eps` at timestep `t`."""
        prev = t - self.train_steps // steps
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final
        x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        return (np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps).astype(np.float32)
