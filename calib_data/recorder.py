"""Record the UNet's real inputs along the deployed sampler's trajectories.

The sampler is diffusers' own StableDiffusionPipeline (text encoder, scheduler, classifier-free
guidance) run to latents; a forward pre-hook on the UNet sees every call it makes, exactly as it makes
it, and hands the chosen ones on, one batch row (uncond / cond) at a time. The VAE is never run
(`output_type="latent"`); a small seeded one only tells the pipeline its scale factor.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .prompts import Prompt
from .schedules import Schedule, step_weights

BRANCHES_CFG = ("uncond", "cond")  # diffusers concatenates [negative, positive] along the batch


@dataclass(frozen=True)
class Pick:
    prompt: int  # index into the prompt list
    step: int
    branch: str


@dataclass
class UnetCall:
    pick: Pick
    generator_seed: int  # the pipeline's generator for this trajectory: rerun it to get the same call
    timestep: float
    inputs: dict[str, np.ndarray]  # the model-level inputs (sample, timestep, ...); batch 1


def choose(prompts: list[Prompt], schedule: Schedule, timesteps: list[float], samples: int, trajectories: int,
           weighting: str, seed: int) -> list[Pick]:
    """`samples` (prompt, step, branch) picks over `trajectories` prompts, deterministic for `seed`."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(prompts))[:min(trajectories, len(prompts), samples)]
    branches = BRANCHES_CFG if schedule.uses_cfg else ("cond",)
    per_step = np.repeat(step_weights(schedule, timesteps, weighting), len(branches)) / len(branches)
    capacity = len(timesteps) * len(branches)
    quotas = [samples // len(chosen) + (i < samples % len(chosen)) for i in range(len(chosen))]
    if max(quotas) > capacity:
        raise ValueError(f"{samples} samples need more than {len(chosen)} trajectories x {capacity} UNet inputs")
    picks = []
    for prompt, quota in zip(chosen, quotas):
        for slot in sorted(rng.choice(capacity, size=quota, replace=False, p=per_step)):
            picks.append(Pick(int(prompt), int(slot // len(branches)), branches[slot % len(branches)]))
    return picks


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=[8] * 4, down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=8,
                         layers_per_block=1)


def pipeline(unet, tokenizer, text_encoder, schedule: Schedule):
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # image-processor notices about torchvision, irrelevant here
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=schedule.make_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def timesteps_of(schedule: Schedule) -> list[float]:
    scheduler = schedule.make_scheduler()
    scheduler.set_timesteps(schedule.steps)
    return [float(t) for t in scheduler.timesteps]


class _Recorded(Exception):
    """Raised from the UNet's hook once a trajectory's last picked input is recorded: the steps after it
    would change nothing recorded."""


def record(pipe, schedule: Schedule, prompts: list[Prompt], picks: list[Pick], resolution: int, seed: int,
           rows: Callable[[tuple, dict], list[dict[str, np.ndarray]]], on_call: Callable[[UnetCall], None],
           on_step: Callable[[int, int], None] | None = None) -> None:
    """Run one trajectory per picked prompt, up to its last picked step; call `on_call` for every picked UNet
    input, in order. `rows`: a UNet call (args, kwargs) as one feed of model-level inputs per batch row (the
    UNet family's Signature.rows)."""
    by_prompt: dict[int, dict[tuple[int, str], Pick]] = {}
    for pick in picks:
        by_prompt.setdefault(pick.prompt, {})[(pick.step, pick.branch)] = pick
    branches = BRANCHES_CFG if schedule.uses_cfg else ("cond",)
    state = {"step": 0, "wanted": {}, "generator_seed": 0}

    def hook(module, args, kwargs):
        if state["step"] > max(step for step, _ in state["wanted"]):
            raise _Recorded
        for branch, inputs in zip(branches, rows(args, kwargs)):
            pick = state["wanted"].get((state["step"], branch))
            if pick is not None:
                on_call(UnetCall(pick, state["generator_seed"], float(inputs["timestep"][0]), inputs))
        state["step"] += 1
        if on_step:
            on_step(state["step"], schedule.steps)

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for prompt_index, wanted in sorted(by_prompt.items()):
            state.update(step=0, wanted=wanted, generator_seed=seed * 1000 + prompt_index)
            generator = torch.Generator().manual_seed(state["generator_seed"])
            with torch.no_grad(), contextlib.suppress(_Recorded):
                pipe(prompts[prompt_index].text, height=resolution, width=resolution,
                     num_inference_steps=schedule.steps, guidance_scale=schedule.drawn_guidance,
                     generator=generator, output_type="latent")
    finally:
        handle.remove()
