"""RK3588 / RK3588S (Orange Pi 5, Rock 5): 3 NPU cores, 6 TOPS int8 in all, ~956 KB NPU-usable SRAM.

rknn-toolkit2 2.5.0 accepts `w8a8` or no quantization (float16) for it; `w8a16` is refused at
`config()` (see ../shared/rknn-facts.md). rkconvert builds float16 so far.
"""

from .chip import Chip

CHIP = Chip(
    name="rk3588",
    npu_cores=3,
    sram_bytes=956 * 1024,
    dtypes=("float16",),
    passes=("host_time_projection",),
)
