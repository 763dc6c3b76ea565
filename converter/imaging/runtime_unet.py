"""A UNet that runs outside torch, seen by diffusers' pipelines as their UNet module.

StableDiffusionPipeline calls `unet(latents, t, encoder_hidden_states=...)` once per step with the
whole batch (with classifier-free guidance: every prompt's uncond and cond rows). Each row becomes
the model-level inputs (the family's Signature.rows), the host programs turn them into what the rewritten
graph takes (t_emb), and the whole batch goes to `run` at once, so a simulator in another process is asked
once per step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from diffusers.configuration_utils import FrozenDict

from converter.models.family import Signature

GraphFeed = dict[str, np.ndarray]


class RuntimeUNet(torch.nn.Module):
    def __init__(self, signature: Signature, to_graph: Callable[[GraphFeed], GraphFeed],
                 run: Callable[[list[GraphFeed]], list[np.ndarray]], config: dict | None = None):
        """`config`: the UNet's own diffusers config where there is one; else what a pipeline reads of it."""
        super().__init__()
        self.signature, self.config = signature, FrozenDict(config or signature.pipeline_config())
        self.to_graph, self.run = to_graph, run

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, *args, return_dict: bool = True, **kwargs):
        feeds = [self.to_graph(row) for row in self.signature.rows(args, kwargs)]
        out = torch.from_numpy(np.concatenate(self.run(feeds)))
        return (out,) if not return_dict else {"sample": out}
