"""The samplers StableDiffusionPipeline runs with diffusers' schedulers, in numpy, step for step: DDIM
(eta 0), Euler, Euler-ancestral (SD-Turbo's) and LCM, of epsilon- or v-predicting models, from a pipeline's
`scheduler_config.json` (or another of them on that config's noise schedule: --scheduler). The ancestral
samplers' noise comes from the seed's generator after the starting latents (noise.TorchGenerator), as
diffusers draws it from the pipeline's generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class SamplerError(ValueError):
    """A scheduler config this runner cannot sample with: one line naming the file and what is unsupported."""


def read(config_path: Path, class_names: tuple[str, ...], required: dict, class_name: str | None = None) -> dict:
    """The config, as the sampler `class_name` (default: the config's own) reads it, or a SamplerError when
    that class is not one of `class_names` or a key of `required` (key -> the values implemented, the first
    being what an absent key means) has another."""
    c = json.loads(Path(config_path).read_text())
    c["_class_name"] = class_name or c.get("_class_name")
    unsupported = {k: c.get(k) for k, ok in required.items() if c.get(k, ok[0]) not in ok}
    if c["_class_name"] not in class_names or unsupported:
        raise SamplerError(f"{config_path}: {c['_class_name']} {unsupported or ''}: this runner samples with "
                           f"{' / '.join(class_names)} as configured by {required}")
    return c


def alphas_cumprod(c: dict, config_path: Path) -> np.ndarray:
    steps = c["num_train_timesteps"]
    if c.get("beta_schedule") == "scaled_linear":
        betas = np.linspace(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, steps, dtype=np.float32) ** 2
    elif c.get("beta_schedule") == "linear":
        betas = np.linspace(c["beta_start"], c["beta_end"], steps, dtype=np.float32)
    else:
        raise SamplerError(f"{config_path}: beta_schedule {c.get('beta_schedule')!r} (scaled_linear or linear)")
    return np.cumprod(1.0 - betas, dtype=np.float32)


PREDICTIONS = ("epsilon", "v_prediction")
# what DDIM and LCM implement here: no clipping, thresholding or zero-SNR rescaling
PLAIN = {"prediction_type": PREDICTIONS, "clip_sample": (False,), "thresholding": (False,),
         "rescale_betas_zero_snr": (False,)}


def predicts_v(c: dict) -> bool:
    """Whether the model's output is v (SD 2.x at 768 px and its fine-tunes), not the noise."""
    return c.get("prediction_type", "epsilon") == "v_prediction"


def noised(a_t: np.float32, x0: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Clean latents `x0` at a timestep of cumulative alpha `a_t` (DDPM's forward process)."""
    return (np.sqrt(a_t) * x0 + np.sqrt(1 - a_t) * noise).astype(np.float32)


def img2img_skip(steps: int, strength: float) -> int:
    """How many of `steps` an image-to-image run skips: diffusers' get_timesteps (the sampler runs
    int(steps x strength) of them, from the noisier end)."""
    return max(steps - min(int(steps * strength), steps), 0)


def original_and_noise(out: np.ndarray, x: np.ndarray, a_t: np.float32, v: bool) -> tuple[np.ndarray, np.ndarray]:
    """(x0, noise) at a timestep of cumulative alpha `a_t` from the model's output `out` on `x` (diffusers'
    DDIM and LCM conversions)."""
    if v:
        return np.sqrt(a_t) * x - np.sqrt(1 - a_t) * out, np.sqrt(a_t) * out + np.sqrt(1 - a_t) * x
    return (x - np.sqrt(1 - a_t) * out) / np.sqrt(a_t), out


class Ddim:
    init_noise_sigma = np.float32(1.0)

    def __init__(self, config_path: Path, class_name: str | None = None):
        c = read(config_path, ("DDIMScheduler",), PLAIN, class_name)
        self.v = predicts_v(c)
        self.train_steps = c["num_train_timesteps"]
        self.alphas_cumprod = alphas_cumprod(c, config_path)
        self.final = np.float32(1.0) if c.get("set_alpha_to_one", True) else self.alphas_cumprod[0]
        self.offset = c.get("steps_offset", 0)
        self.spacing = c.get("timestep_spacing", "leading")
        self.timesteps = np.zeros(0, np.int64)
        self.steps = 0

    def set(self, steps: int) -> None:
        self.steps = steps
        if self.spacing == "leading":
            found = (np.arange(steps) * (self.train_steps // steps)).round()[::-1].astype(np.int64) + self.offset
        elif self.spacing == "trailing":
            found = np.round(np.arange(self.train_steps, 0, -self.train_steps / steps)).astype(np.int64) - 1
        elif self.spacing == "linspace":
            found = np.linspace(0, self.train_steps - 1, steps).round()[::-1].astype(np.int64)
        else:
            raise SamplerError(f"timestep_spacing {self.spacing!r}: leading, trailing or linspace")
        self.timesteps = found

    def begin(self, skipped: int) -> None:
        """Start `skipped` steps in (img2img: the steps of the noise the starting picture keeps)."""
        self.timesteps = self.timesteps[skipped:]

    def add_noise(self, x0: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Clean latents noised to the first timestep (diffusers' add_noise)."""
        return noised(self.alphas_cumprod[int(self.timesteps[0])], x0, noise)

    def scale(self, x: np.ndarray, i: int) -> np.ndarray:
        return x

    def step(self, out: np.ndarray, i: int, x: np.ndarray, generator) -> np.ndarray:
        """x at the next timestep, from the model's output `out` (noise or v) at step `i` (deterministic)."""
        t = int(self.timesteps[i])
        prev = t - self.train_steps // self.steps
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final
        x0, eps = original_and_noise(out, x, a_t, self.v)
        return (np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps).astype(np.float32)


EULER_CLASSES = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler")
EULER_REQUIRED = {"prediction_type": PREDICTIONS, "interpolation_type": ("linear",), "use_karras_sigmas": (False,),
                  "use_exponential_sigmas": (False,), "use_beta_sigmas": (False,), "timestep_type": ("discrete",),
                  "final_sigmas_type": ("zero",), "rescale_betas_zero_snr": (False,)}


class Euler:
    def __init__(self, config_path: Path, class_name: str | None = None):
        c = read(config_path, EULER_CLASSES, EULER_REQUIRED, class_name)
        self.ancestral = c["_class_name"] == "EulerAncestralDiscreteScheduler"
        self.v = predicts_v(c)
        self.train_steps = c["num_train_timesteps"]
        acp = alphas_cumprod(c, config_path)
        self.train_sigmas = np.sqrt((1 - acp) / acp)
        self.offset = c.get("steps_offset", 0)
        self.spacing = c.get("timestep_spacing", "linspace")
        if self.spacing not in ("linspace", "leading", "trailing"):
            raise SamplerError(f"{config_path}: timestep_spacing {self.spacing!r}: linspace, leading or trailing")
        self.timesteps = np.zeros(0, np.float32)
        self.sigmas = np.zeros(1, np.float32)

    def set(self, steps: int) -> None:
        if self.spacing == "linspace":
            timesteps = np.linspace(0, self.train_steps - 1, steps, dtype=np.float32)[::-1].copy()
        elif self.spacing == "leading":
            ratio = self.train_steps // steps
            timesteps = (np.arange(steps) * ratio).round()[::-1].astype(np.float32) + self.offset
        else:
            timesteps = np.arange(self.train_steps, 0, -self.train_steps / steps).round().astype(np.float32) - 1
        sigmas = np.interp(timesteps, np.arange(len(self.train_sigmas)), self.train_sigmas)
        self.sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self.timesteps = timesteps.astype(np.float32)

    def begin(self, skipped: int) -> None:
        self.timesteps, self.sigmas = self.timesteps[skipped:], self.sigmas[skipped:]

    def add_noise(self, x0: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return (x0 + noise * self.sigmas[0]).astype(np.float32)

    @property
    def init_noise_sigma(self) -> np.float32:
        top = self.sigmas.max()
        return top if self.spacing in ("linspace", "trailing") else np.sqrt(top ** 2 + np.float32(1))

    def scale(self, x: np.ndarray, i: int) -> np.ndarray:
        return x / np.sqrt(self.sigmas[i] ** 2 + np.float32(1))

    def step(self, out: np.ndarray, i: int, x: np.ndarray, generator) -> np.ndarray:
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        if self.v:  # on the unscaled latents x: diffusers' Euler conversion
            original = out * (-sigma / np.sqrt(sigma ** 2 + 1)) + x / (sigma ** 2 + 1)
        else:
            original = x - sigma * out
        derivative = (x - original) / sigma
        if not self.ancestral:
            return (x + derivative * (sigma_next - sigma)).astype(np.float32)
        up = np.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2)
        down = np.sqrt(sigma_next ** 2 - up ** 2)
        drifted = x + derivative * (down - sigma)
        return (drifted + generator.randn(x.shape) * up).astype(np.float32)  # drawn at every step, the last too


SIGMA_DATA = np.float32(0.5)


class Lcm:
    init_noise_sigma = np.float32(1.0)

    def __init__(self, config_path: Path, class_name: str | None = None):
        c = read(config_path, ("LCMScheduler",), PLAIN, class_name)
        self.v = predicts_v(c)
        self.config_path = config_path
        self.train_steps = c["num_train_timesteps"]
        self.original_steps = c.get("original_inference_steps", 50)
        self.timestep_scaling = np.float32(c.get("timestep_scaling", 10.0))
        self.alphas_cumprod = alphas_cumprod(c, config_path)
        self.final = np.float32(1.0) if c.get("set_alpha_to_one", True) else self.alphas_cumprod[0]
        self.timesteps = np.zeros(0, np.int64)

    def set(self, steps: int) -> None:
        """Evenly spaced over the distillation's own schedule (original_inference_steps), from its end."""
        if not 1 <= steps <= self.original_steps:
            raise SamplerError(f"{self.config_path}: {steps} steps: LCM takes 1 to original_inference_steps "
                               f"({self.original_steps})")
        origin = (np.arange(1, self.original_steps + 1) * (self.train_steps // self.original_steps) - 1)[::-1]
        self.timesteps = origin[np.floor(np.linspace(0, len(origin), steps, endpoint=False)).astype(np.int64)]

    def begin(self, skipped: int) -> None:
        self.timesteps = self.timesteps[skipped:]

    def add_noise(self, x0: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return noised(self.alphas_cumprod[int(self.timesteps[0])], x0, noise)

    def scale(self, x: np.ndarray, i: int) -> np.ndarray:
        return x

    def step(self, out: np.ndarray, i: int, x: np.ndarray, generator) -> np.ndarray:
        t = int(self.timesteps[i])
        last = i == len(self.timesteps) - 1
        prev = t if last else int(self.timesteps[i + 1])
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final
        scaled = np.float32(t) * self.timestep_scaling
        c_skip = SIGMA_DATA ** 2 / (scaled ** 2 + SIGMA_DATA ** 2)
        c_out = scaled / np.sqrt(scaled ** 2 + SIGMA_DATA ** 2)
        original, _ = original_and_noise(out, x, a_t, self.v)
        denoised = c_out * original + c_skip * x
        if last:
            return denoised.astype(np.float32)
        return (np.sqrt(a_prev) * denoised + np.sqrt(1 - a_prev) * generator.randn(x.shape)).astype(np.float32)


CLASSES = {"DDIMScheduler": Ddim, "EulerDiscreteScheduler": Euler, "EulerAncestralDiscreteScheduler": Euler,
           "LCMScheduler": Lcm}
NAMES = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",  # --scheduler
         "euler-ancestral": "EulerAncestralDiscreteScheduler", "lcm": "LCMScheduler"}


def guidance_embedding(scale: float, dim: int) -> np.ndarray:
    """An LCM-distilled UNet's timestep_cond for guidance `scale`: the sinusoidal embedding of (scale - 1) x 1000
    (diffusers' get_guidance_scale_embedding), shape (1, dim), float32. Such a UNet runs once per step: the
    guidance is in the embedding, not in an unconditional pass."""
    half = dim // 2
    frequencies = np.exp(np.arange(half, dtype=np.float32) * -np.float32(np.log(10000.0) / (half - 1)))
    angles = np.float32((scale - 1.0) * 1000.0) * frequencies
    embedding = np.concatenate([np.sin(angles), np.cos(angles), np.zeros(dim % 2, np.float32)])
    return embedding[None].astype(np.float32)


def class_name(config_path: Path, scheduler: str | None = None) -> str:
    """The diffusers class to sample with: the one `scheduler` (a NAMES key) names, else `config_path`'s own;
    a SamplerError when this runner does not implement it."""
    name = NAMES[scheduler] if scheduler else json.loads(Path(config_path).read_text()).get("_class_name")
    if name not in CLASSES:
        raise SamplerError(f"{config_path}: {name}: this runner samples with {', '.join(CLASSES)} (--scheduler "
                           f"{'|'.join(NAMES)} picks one on this noise schedule)")
    return name


def from_config(config_path: Path, scheduler: str | None = None):
    """The sampler `class_name` chooses, on `config_path`'s noise schedule."""
    name = class_name(config_path, scheduler)
    return CLASSES[name](config_path, name)
