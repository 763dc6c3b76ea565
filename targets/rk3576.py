"""RK3576: 2 NPU cores, 6 TOPS int8; rknn-toolkit2 2.5.0 offers w4a16 (int4 weights) for it.

Measured here on a tiny SD 1.5-structured UNet (with host_time_projection), output PSNR against
ONNX Runtime: float16 70.9 dB, w8a8 39.0 dB, w4a16 26.5 dB (trajectory calibration, 8 samples).

`--attention-tiles auto` turns on the toolkit's `enable_flash_attention` here (documented for rk3562 /
rk3576) instead of tiling: one SD 1.5 4096-token self-attention at 512², float16, compiler's memory map
(tools/bench_tiling.py --blocks): internal memory 552.9 MB whole, 149.0 MB in 4 query tiles, 48.1 MB in
16, 11.1 MB with flash attention; 1024 tokens: 40.5 / 13.9 / 7.3 / 5.8 MB; PSNR equal throughout. The
demo, float16: 2.54 -> 0.87 MB. The flag changes nothing in a w8a8 build (its activations are int8).
"""

from .chip import Chip
from .rk3588 import CHIP as RK3588

CHIP = Chip(
    name="rk3576",
    npu_cores=2,
    sram_bytes=0,  # not documented for the NPU in what this project has read
    dtypes=("float16", "w8a8", "w4a16"),
    refused_dtypes={"w8a16": "rknn-toolkit2 2.5.0 offers w8a16 for rk3562 only"},
    passes=RK3588.passes,
    flash_attention=True,
    off_by_default=RK3588.off_by_default,
    rejected_ops=RK3588.rejected_ops,
    cpu_only_ops=RK3588.cpu_only_ops,
)
