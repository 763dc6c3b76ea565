"""What rkconvert knows about a Rockchip NPU target, kept as data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chip:
    name: str  # RKNN's target_platform value
    npu_cores: int
    sram_bytes: int
    dtypes: tuple[str, ...]  # what rkconvert can build for it, RKNN's dtype names
    passes: tuple[str, ...]  # graph_passes.CATALOGUE names, in the order they run
    notes: str = ""
