"""What a UNet of each family takes, in one place: its graph inputs, how they are traced, checked and fed.

Every SD UNet takes `sample`, `timestep` and `encoder_hidden_states`. A family adds conditioning inputs
(`EXTRAS`), read off the diffusers config as `UNet2DConditionModel` itself reads it:
- an LCM-distilled UNet (`time_cond_proj_dim`): `timestep_cond`, the guidance scale's sinusoidal embedding,
  a keyword of its own in diffusers' call; such a UNet runs once per step (no unconditional pass);
- SDXL (`addition_embed_type="text_time"`): `text_embeds`, the second text encoder's pooled output, and
  `time_ids`, the six size and crop numbers; both inside diffusers' `added_cond_kwargs`. Its UNet builds
  alone: calibration and drawing run SD's pipeline, which cannot make them (`Signature.sdxl`).

The tracer, the check inputs, the calibration recorder, the runtime UNet and the release read a `Signature`
(the pipeline's other models, `PIPELINE_MODELS`, are traced by pipeline_models.py);
the bundle's manifest records how the board makes each extra input (`source`), so the runner needs no
family code of its own. A new family is a new `Extra` and a line in `widths`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from converter.board.samplers import guidance_embedding
from converter.common.errors import UserError

SAMPLE, TIMESTEP, CONTEXT = "sample", "timestep", "encoder_hidden_states"
CORE = (SAMPLE, TIMESTEP, CONTEXT)
TEXT_TOKENS = 77  # CLIP's context length, what SD text encoders emit
VAE_SCALE = 8
TEXT_ENCODER, VAE_DECODER, VAE_ENCODER = "text_encoder", "vae_decoder", "vae_encoder"
PIPELINE_MODELS = (TEXT_ENCODER, VAE_DECODER)  # what draws beside the UNet, in the order an image needs them
# Traced and shipped as ONNX beside them (the board runs it on its CPU), not built for the NPU yet: the encoder
# that turns a picture to redraw (img2img) into latents.
TRACED_MODELS = (*PIPELINE_MODELS, VAE_ENCODER)
SIZE_IDS = 6  # SDXL's time_ids: original (h, w), crop (top, left), target (h, w)


@dataclass(frozen=True)
class Extra:
    """A conditioning input beyond the three every SD UNet takes."""

    name: str  # the graph input's, and diffusers' keyword (in added_cond_kwargs when `added`)
    added: bool  # passed in diffusers' added_cond_kwargs (SDXL), not as a keyword of its own (LCM)
    # What a sampler makes it from: "guidance" (the scale's embedding), "sizes" (the image size), "pooled-text"
    # (a text encoder's pooled output). Check inputs take the first two fixed, a pooled text Gaussian.
    source: str


GUIDANCE = Extra("timestep_cond", added=False, source="guidance")
EXTRAS = {e.name: e for e in (GUIDANCE, Extra("text_embeds", added=True, source="pooled-text"),
                              Extra("time_ids", added=True, source="sizes"))}
RANKS = {SAMPLE: 4, CONTEXT: 3, **{name: 2 for name in EXTRAS}}


def widths(config: Mapping) -> dict[str, int]:
    """The extra inputs a UNet of this diffusers config takes, with their widths."""
    get = config.get
    found = {}
    if get("time_cond_proj_dim"):
        found[GUIDANCE.name] = get("time_cond_proj_dim")
    kind = get("addition_embed_type")
    if kind == "text_time":
        found["text_embeds"] = get("projection_class_embeddings_input_dim") - SIZE_IDS * get("addition_time_embed_dim")
        found["time_ids"] = SIZE_IDS
    elif kind is not None:
        raise UserError(f"UNet addition_embed_type {kind!r}: rkconvert builds SD 1.x/2.x, LCM and SDXL "
                        "('text_time') UNets")
    return found


@dataclass(frozen=True)
class Signature:
    """A UNet's graph inputs at one resolution, batch 1."""

    channels: int
    latent: int  # the latent's edge
    context: int  # encoder_hidden_states' width
    extras: dict[str, int]  # extra input name -> width, in trace order

    @classmethod
    def of_config(cls, config: Mapping, resolution: int) -> Signature:
        """From a diffusers UNet config (a loaded UNet's .config, or its config.json)."""
        multiple = VAE_SCALE * 2 ** (len(config["block_out_channels"]) - 1)
        if resolution <= 0 or resolution % multiple:
            raise UserError(f"--resolution {resolution}: must be a positive multiple of {multiple} for this UNet")
        return cls(config["in_channels"], resolution // VAE_SCALE, config["cross_attention_dim"], widths(config))

    @classmethod
    def of_specs(cls, specs: dict[str, tuple[list[int], np.dtype]]) -> Signature:
        """From an ONNX UNet's model-level input specs (its names already diffusers')."""
        sample = specs[SAMPLE][0]
        return cls(sample[1], sample[-1], specs[CONTEXT][0][-1],
                   {name: specs[name][0][-1] for name in EXTRAS if name in specs})

    @property
    def names(self) -> tuple[str, ...]:
        """In the order a trace flattens diffusers' call: own keywords, then added_cond_kwargs."""
        return CORE + tuple(sorted(self.extras, key=lambda name: EXTRAS[name].added))

    @property
    def resolution(self) -> int:
        return self.latent * VAE_SCALE

    @property
    def sdxl(self) -> bool:
        """Its extra inputs come from SDXL's pipeline (a second, pooled text encoder), which rkconvert does not
        run: its calibration and drawing are not made."""
        return any(EXTRAS[name].source == "pooled-text" for name in self.extras)

    @property
    def embeds_guidance(self) -> bool:
        """Guidance in an embedding: one pass per step, no classifier-free guidance."""
        return GUIDANCE.name in self.extras

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {SAMPLE: (1, self.channels, self.latent, self.latent), TIMESTEP: (1,),
                CONTEXT: (1, TEXT_TOKENS, self.context), **{name: (1, w) for name, w in self.extras.items()}}

    def sources(self) -> dict[str, str]:
        """How a sampler makes each extra input (the bundle manifest's pipeline.conditioning)."""
        return {name: EXTRAS[name].source for name in self.extras}

    def pipeline_config(self) -> dict:
        """What a diffusers pipeline reads of its UNet's config."""
        return {"in_channels": self.channels, "out_channels": self.channels, "sample_size": self.latent,
                "cross_attention_dim": self.context, "time_cond_proj_dim": self.extras.get(GUIDANCE.name)}

    def fixed_inputs(self, guidance_scale: float) -> dict[str, np.ndarray]:
        """Check inputs that take one value in every feed: the deployed guidance's embedding, the size ids."""
        made = {"guidance": lambda width: guidance_embedding(guidance_scale, width),
                "sizes": lambda width: np.array([[self.resolution, self.resolution, 0, 0, self.resolution,
                                                  self.resolution]], np.float32)}
        return {name: made[EXTRAS[name].source](width) for name, width in self.extras.items()
                if EXTRAS[name].source in made}

    def example_inputs(self) -> dict:
        import torch

        shapes = self.shapes()
        return {name: torch.full(shapes[name], 999.0) if name == TIMESTEP else torch.zeros(shapes[name])
                for name in self.names}

    def call_keywords(self, inputs: dict) -> dict:
        """The extra inputs as diffusers' UNet call takes them."""
        added = {name: inputs[name] for name in self.extras if EXTRAS[name].added}
        return {**{name: inputs[name] for name in self.extras if not EXTRAS[name].added},
                **({"added_cond_kwargs": added} if added else {})}

    def rows(self, args: tuple, kwargs: dict) -> list[dict[str, np.ndarray]]:
        """A diffusers pipeline's UNet call (the whole batch) as one feed of graph inputs per batch row."""
        sample, timestep = args[0], args[1]
        states = kwargs[CONTEXT] if CONTEXT in kwargs else args[2]
        added = kwargs.get("added_cond_kwargs") or {}
        extras = {name: added[name] if EXTRAS[name].added else kwargs[name] for name in self.extras}
        t = np.asarray(timestep.detach() if hasattr(timestep, "detach") else timestep, np.float32).reshape(-1)

        def row(tensor, i: int) -> np.ndarray:
            return tensor[i:i + 1].detach().float().numpy().copy()

        return [{SAMPLE: row(sample, i), TIMESTEP: t[i:i + 1] if t.size > 1 else t[:1].copy(),
                 CONTEXT: row(states, i), **{name: row(value, i) for name, value in extras.items()}}
                for i in range(sample.shape[0])]
