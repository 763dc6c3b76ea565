"""The starting noise of StableDiffusionPipeline, without torch: `torch.randn(shape,
generator=torch.Generator().manual_seed(seed))` on the CPU, reproduced in numpy so a prompt and seed
start from the same latents on the board as in `rkconvert generate` (equal within float32 rounding of
log / cos, ~4e-7).

torch's CPU generator is MT19937 seeded with init_genrand(seed), which is numpy's legacy seeding of
RandomState for an integer seed. torch.randn takes 24 bits of each 32-bit draw as a uniform float and
turns each block of 16 into normals with Box-Muller: the first 8 as radii (1 - u), the next 8 as angles.
"""

from __future__ import annotations

import numpy as np


class TorchGenerator:
    """`torch.Generator().manual_seed(seed)` on the CPU: each randn continues the stream, as the ancestral
    samplers' noise continues it after the starting latents."""

    def __init__(self, seed: int):
        self.state = np.random.RandomState(seed & 0xFFFFFFFF)

    def randn(self, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        if count % 16:
            # torch redraws the last block of a size that is not a multiple of 16: not needed for latents.
            raise ValueError(f"noise of shape {shape}: {count} values, not a multiple of 16")
        bits = self.state.randint(0, 1 << 32, size=count, dtype=np.uint64)
        uniform = (bits & 0xFFFFFF).astype(np.float32) * np.float32(2.0 ** -24)
        blocks = uniform.reshape(-1, 2, 8)
        radius = np.sqrt(np.float32(-2.0) * np.log(np.float32(1.0) - blocks[:, 0]))
        theta = np.float32(2.0 * np.pi) * blocks[:, 1]
        return np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1).astype(np.float32).reshape(shape)
