"""The sampling schedules a UNet is deployed with, as diffusers schedulers (configs built in, no download).

Every SD 1.x / 2.x base model was trained on the same 1000-step scaled-linear beta schedule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converter.common.errors import UserError

TRAIN_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear"}


@dataclass(frozen=True)
class Schedule:
    name: str
    scheduler: str  # diffusers class name
    steps: int
    guidance_scale: float  # > 1: classifier-free guidance, the UNet runs on the empty prompt too
    options: dict = field(default_factory=dict)
    # An LCM-distilled UNet takes the guidance scale as an embedding (timestep_cond) and runs once per step:
    # set for such a UNet; it is drawn with `lcm_guidance` (None: guidance_scale).
    embedded_guidance: bool = False
    lcm_guidance: float | None = None
    prediction_type: str = "epsilon"  # what the UNet predicts: its pipeline's scheduler config says (prediction_of)

    @property
    def uses_cfg(self) -> bool:
        return self.guidance_scale > 1 and not self.embedded_guidance

    @property
    def embedding_guidance(self) -> float:
        """The guidance scale whose embedding an LCM-distilled UNet is given."""
        return self.guidance_scale if self.lcm_guidance is None else self.lcm_guidance

    @property
    def drawn_guidance(self) -> float:
        return self.embedding_guidance if self.embedded_guidance else self.guidance_scale

    def make_scheduler(self):
        import diffusers

        return getattr(diffusers, self.scheduler).from_config({**TRAIN_SCHEDULE, **self.options,
                                                               "prediction_type": self.prediction_type})


SCHEDULES = {s.name: s for s in (
    Schedule("sd15-20step", "DDIMScheduler", 20, 7.5,
             {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}),
    Schedule("sd15-20step-euler", "EulerDiscreteScheduler", 20, 7.5, {"steps_offset": 1}),
    Schedule("turbo-4step", "EulerAncestralDiscreteScheduler", 4, 0.0, {"timestep_spacing": "trailing"}),
    # 1.0: no CFG for a UNet with LCM weights merged in (LCM-LoRA); 8.0 for an LCM-distilled one, as diffusers'
    # LCM examples draw LCM-Dreamshaper v7.
    Schedule("lcm-2step", "LCMScheduler", 2, 1.0, lcm_guidance=8.0),
    Schedule("lcm-4step", "LCMScheduler", 4, 1.0, lcm_guidance=8.0),
)}


def default_for(scheduler_class: str) -> Schedule:
    """How a pipeline whose scheduler is `scheduler_class` draws when it declares no evaluation: LCM's 4 steps
    (an LCM-LoRA's pipeline, or an LCM-distilled UNet's), else SD 1.5's 20 steps at guidance 7.5."""
    return SCHEDULES["lcm-4step" if scheduler_class == "LCMScheduler" else "sd15-20step"]


def prediction_of(pipeline: Path | None) -> str:
    """What a pipeline folder's UNet predicts, as its scheduler config says ("epsilon" or "v_prediction");
    "epsilon" for a UNet without a pipeline."""
    config = pipeline / "scheduler" / "scheduler_config.json" if pipeline else None
    if config is None or not config.is_file():
        return "epsilon"
    return json.loads(config.read_text()).get("prediction_type", "epsilon")


def get_schedule(name: str) -> Schedule:
    try:
        return SCHEDULES[name]
    except KeyError:
        raise UserError(f"--schedule {name}: unknown (known: {', '.join(SCHEDULES)})") from None


def step_weights(schedule: Schedule, timesteps: list[float], weighting: str) -> np.ndarray:
    """How likely each step is to be sampled: `uniform`, or `schedule`: in proportion to the noise
    level (log sigma) the step removes, so steps where the schedule moves fast count more."""
    if weighting == "uniform":
        weights = np.ones(len(timesteps))
    else:
        alphas = schedule.make_scheduler().alphas_cumprod.numpy().astype(np.float64)
        t = np.clip(np.round(timesteps).astype(int), 0, len(alphas) - 1)
        log_sigma = 0.5 * np.log((1 - alphas[t]) / alphas[t])
        floor = 0.5 * np.log((1 - alphas[0]) / alphas[0])
        weights = np.maximum(log_sigma - np.append(log_sigma[1:], floor), 1e-6)
    return weights / weights.sum()
