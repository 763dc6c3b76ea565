"""RK3562: one NPU core, 1 TOPS int8; the chip rknn-toolkit2 2.5.0 offers w8a16 for.

Measured here on a tiny SD 1.5-structured UNet (with host_time_projection), output PSNR against
ONNX Runtime: float16 70.9 dB, w8a8 39.0 dB. w8a16 kills the toolkit (SIGSEGV or SIGABRT inside `rknn
building`, its C++ compiler) on any Conv with under 32 input or 8 output channels, so w8a16 builds run
pad_conv_channels (graph_passes/pad_conv_channels.py); then the tiny UNet builds at 54.3 dB (float
weights) and 75.4 dB (its W8A16 checkpoint: weights already on an int8 grid), and the demo's W8A16
checkpoint at 59.8 dB (images 66.6 dB, prompt accuracy 100%; float16 76.2 dB, images 69.3 dB).

`--attention-tiles auto` turns on the toolkit's `enable_flash_attention` here, as on rk3576: one SD 1.5
4096-token self-attention, float16, compiler's memory map: internal memory 180.4 MB whole, 22.6 MB in 16
query tiles, 10.7 MB with flash attention (1024 tokens: 16.5 / 5.2 / 5.5 MB); PSNR equal throughout.
"""

from .chip import Chip
from .rk3588 import CHIP as RK3588

CHIP = Chip(
    name="rk3562",
    npu_cores=1,
    sram_bytes=0,  # not documented for the NPU in what this project has read
    dtypes=("float16", "w8a8", "w8a16"),
    refused_dtypes={
        "w4a16": "rknn-toolkit2 2.5.0 offers w4a16 for rk3576 and rv1126b only",
    },
    passes=RK3588.passes + ("pad_conv_channels", "pad_matmul_inner_dim"),
    dtype_passes={"pad_conv_channels": ("w8a16",), "pad_matmul_inner_dim": ("w8a16",)},
    flash_attention=True,
    off_by_default=RK3588.off_by_default,
    rejected_ops=RK3588.rejected_ops,
    cpu_only_ops=RK3588.cpu_only_ops,
)
