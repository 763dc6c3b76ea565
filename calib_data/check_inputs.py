"""Deterministic UNet inputs for comparing a converted model with ONNX Runtime: `--check-inputs gaussian`.

A unit-Gaussian latent (what the sampler starts from), unit-Gaussian text states, and timesteps spread
over the training range (1000 steps); another graph's float inputs unit-Gaussian too, its integer inputs
valid indices. Cheap and model-agnostic, which suits a float16 build; a quantized
build is judged on held-out inputs recorded along the sampler's trajectories instead (recorder.py).
"""

from __future__ import annotations

import numpy as np

TRAIN_TIMESTEPS = 1000


def check_timesteps(count: int) -> list[float]:
    """`count` timesteps evenly inside (0, 999): 1 sample -> 500, 3 -> 250, 500, 749."""
    return [float(round(t)) for t in np.linspace(0, TRAIN_TIMESTEPS - 1, count + 2)[1:-1]]


def check_inputs(specs: dict[str, tuple[list[int], np.dtype]], count: int, seed: int,
                 fixed: dict[str, np.ndarray] | None = None,
                 bounds: dict[str, int] | None = None) -> list[dict[str, np.ndarray]]:
    """`count` feeds for inputs named as the traced UNet names them (`sample`, `timestep`, ...), or any other
    graph's; `fixed`: inputs that take one value in every feed (an LCM UNet's guidance embedding); integer
    inputs (token ids) are drawn uniformly below `bounds[name]` (the table they index; else 0 or 1)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for t in check_timesteps(count):
        feed = {}
        for name, (shape, dtype) in specs.items():
            if fixed and name in fixed:
                feed[name] = fixed[name].reshape(shape).astype(dtype)
            elif name == "timestep":
                feed[name] = np.full(shape, t, dtype=dtype)
            elif np.issubdtype(dtype, np.integer) or dtype == np.bool_:
                feed[name] = rng.integers(0, (bounds or {}).get(name, 2), size=shape).astype(dtype)
            else:
                feed[name] = rng.standard_normal(shape).astype(dtype)
        feeds.append(feed)
    return feeds
