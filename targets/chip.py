"""What rkconvert knows about a Rockchip NPU target, kept as data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Chip:
    name: str  # RKNN's target_platform value
    npu_cores: int
    sram_bytes: int
    dtypes: tuple[str, ...]  # what rkconvert can build for it, RKNN's dtype names
    passes: tuple[str, ...]  # graph_passes.CATALOGUE names, in the order they run
    off_by_default: tuple[str, ...] = ()  # passes of `passes` that run only when asked for
    # RKNN dtype -> why rkconvert will not build it for this chip (shown when asked for).
    refused_dtypes: dict[str, str] = field(default_factory=dict)
    # Operator facts for `rkconvert lint`: op type -> why the toolkit refuses it.
    rejected_ops: dict[str, str] = field(default_factory=dict)
    # Op type -> "" if it runs on the CPU, or the fusion by which the toolkit keeps it on the NPU
    # anyway (so lint does not cry wolf).
    cpu_only_ops: dict[str, str] = field(default_factory=dict)
