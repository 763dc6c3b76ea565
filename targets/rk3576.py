"""RK3576: 2 NPU cores, 6 TOPS int8; rknn-toolkit2 2.5.0 offers w4a16 (int4 weights) for it.

Measured here on a tiny SD 1.5-structured UNet (with host_time_projection), output PSNR against
ONNX Runtime: float16 70.9 dB, w8a8 39.0 dB, w4a16 26.5 dB (trajectory calibration, 8 samples).
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
    off_by_default=RK3588.off_by_default,
    rejected_ops=RK3588.rejected_ops,
    cpu_only_ops=RK3588.cpu_only_ops,
)
