"""A random small graph from a seed: image features through a few of the patterns diffusion models use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from converter.fuzz.builder import Builder
from converter.fuzz.patterns import PATTERNS

CHANNELS, SIDES = (4, 8, 16, 32, 64), (4, 8, 16)
MIN_PATTERNS, MAX_PATTERNS = 2, 5
RESIDUAL = 0.3  # how often a pattern that keeps its input's shape gets a residual Add around it


@dataclass(frozen=True)
class FuzzGraph:
    model: onnx.ModelProto
    patterns: tuple[str, ...]  # each pattern's variant, in order


def random_graph(seed: int) -> FuzzGraph:
    rng = np.random.default_rng(seed)
    b = Builder(rng)
    side = int(rng.choice(SIDES))
    x = b.input("x", (1, int(rng.choice(CHANNELS)), side, side))
    used = []
    for _ in range(int(rng.integers(MIN_PATTERNS, MAX_PATTERNS + 1))):
        fits = [p for p in PATTERNS if x.rank in p.ranks]
        weights = np.array([p.weight for p in fits])
        pattern = fits[rng.choice(len(fits), p=weights / weights.sum())]
        y, variant = pattern.write(b, x)
        if y.shape == x.shape and rng.random() < RESIDUAL:
            y = b.op("Add", [y.name, x.name], y.shape)
            variant += "+residual"
        used.append(variant)
        x = y
    return FuzzGraph(b.model([x], f"fuzz-{seed}"), tuple(used))
