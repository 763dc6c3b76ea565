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
    # NPU clock, to turn the compiler's cycle estimate into an estimated time; None where not known.
    npu_clock_hz: int | None = None
    off_by_default: tuple[str, ...] = ()  # passes of `passes` that run only when asked for
    # Passes of `passes` that work around one dtype's toolkit failure: pass name -> the dtypes it runs for.
    dtype_passes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # The toolkit's own `enable_flash_attention` shrinks float16 attention's buffers on this chip
    # (measured per chip in its module; rk3588 accepts the flag and its memory map does not move).
    flash_attention: bool = False
    # RKNN dtype -> why rkconvert will not build it for this chip (shown when asked for).
    refused_dtypes: dict[str, str] = field(default_factory=dict)
    # Operator facts for `rkconvert lint`: op type -> why the toolkit refuses it.
    rejected_ops: dict[str, str] = field(default_factory=dict)
    # Op type -> "" if it runs on the CPU, or the fusion by which the toolkit keeps it on the NPU
    # anyway (so lint does not cry wolf).
    cpu_only_ops: dict[str, str] = field(default_factory=dict)

    def passes_for(self, names: list[str], dtype: str) -> list[str]:
        """`names` without the passes meant for other dtypes than `dtype`."""
        return [n for n in names if dtype in self.dtype_passes.get(n, (dtype,))]

    def auto_dtype(self, w8a16_checkpoint: bool) -> tuple[str, str]:
        """What `--dtype auto` builds for a model on this chip, and why: the dtype that keeps the model's
        own precision (a W8A16 checkpoint's int8 weights bit for bit), never one that loses accuracy."""
        if not w8a16_checkpoint:
            return "float16", "a float model: float16 keeps its precision"
        if "w8a16" in self.dtypes:
            return "w8a16", f"a W8A16 checkpoint: {self.name} builds w8a16"
        return "float16", (f"a W8A16 checkpoint: {self.name} builds no w8a16, so its int8 weights run dequantized "
                           "exactly in float16; --dtype w8a8 keeps them 8-bit, with calibrated 8-bit activations")
