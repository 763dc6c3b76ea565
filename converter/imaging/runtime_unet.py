"""A UNet that runs outside torch, seen by diffusers' pipelines as their UNet module.

StableDiffusionPipeline calls `unet(latents, t, encoder_hidden_states=...)` once per step with the
whole batch (with classifier-free guidance: every prompt's uncond and cond rows). Each row becomes
the model-level inputs (sample, timestep, encoder_hidden_states; an LCM UNet's timestep_cond), the host programs turn them into
what the rewritten graph takes (t_emb), and the whole batch goes to `run` at once, so a simulator in
another process is asked once per step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from diffusers.configuration_utils import FrozenDict

from converter.models.tracing import GUIDANCE_INPUT

GraphFeed = dict[str, np.ndarray]


class RuntimeUNet(torch.nn.Module):
    def __init__(self, config: dict, to_graph: Callable[[GraphFeed], GraphFeed],
                 run: Callable[[list[GraphFeed]], list[np.ndarray]]):
        super().__init__()
        self.config = FrozenDict(config)
        self.to_graph, self.run = to_graph, run

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, *args,
                timestep_cond: torch.Tensor | None = None, return_dict: bool = True, **kwargs):
        t = np.asarray(timestep, dtype=np.float32).reshape(-1)
        feeds = []
        for row in range(sample.shape[0]):
            feed = {"sample": sample[row:row + 1].float().numpy(),
                    "timestep": t[row:row + 1] if t.size > 1 else t[:1],
                    "encoder_hidden_states": encoder_hidden_states[row:row + 1].float().numpy()}
            if timestep_cond is not None:  # an LCM UNet: the pipeline's guidance-scale embedding
                feed[GUIDANCE_INPUT] = timestep_cond[row:row + 1].float().numpy()
            feeds.append(self.to_graph(feed))
        out = torch.from_numpy(np.concatenate(self.run(feeds)))
        return (out,) if not return_dict else {"sample": out}


def config_from_specs(specs: dict) -> dict:
    """What a pipeline reads of a UNet's config, from the model-level input shapes of an ONNX UNet."""
    sample = specs["sample"][0]
    return {"in_channels": sample[1], "out_channels": sample[1], "sample_size": sample[-1],
            "cross_attention_dim": specs["encoder_hidden_states"][0][-1],
            "time_cond_proj_dim": specs[GUIDANCE_INPUT][0][-1] if GUIDANCE_INPUT in specs else None}
