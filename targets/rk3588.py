"""RK3588 / RK3588S (Orange Pi 5, Rock 5): 3 NPU cores, 6 TOPS int8 in all, ~956 KB NPU-usable SRAM.

rknn-toolkit2 2.5.0 accepts `w8a8` or no quantization (float16) for it; `w8a16` is refused at
`config()` (see ../shared/rknn-facts.md). rkconvert builds float16, and w8a8 calibrated on the
sampler's own trajectories (calib_data/).
Pass order matters: host_time_projection reads the time projection's Slices as exported (steps and all);
split_fused_qkv_projection undoes what simplify fuses; group_norm_as_conv reads the GroupNorm pattern as
exported (and as simplified); attention_key_as_gemm and tile_attention read attention as MatMul, which
einsum_as_matmul makes of an Einsum.
"""

from .chip import Chip

CHIP = Chip(
    name="rk3588",
    npu_cores=3,
    sram_bytes=956 * 1024,
    # 1 GHz: the TRM's 1024 int8 MACs per cycle per core x 3 cores x 2 ops x 1 GHz = the advertised 6 TOPS
    # (worked through in https://jas-hacks.blogspot.com/2023, "The RKNN clock is 1Ghz").
    npu_clock_hz=1_000_000_000,
    dtypes=("float16", "w8a8"),
    refused_dtypes={
        "w8a16": "rknn-toolkit2 2.5.0 refuses w8a16 for rk3588 at config() (it offers it for rk3562)",
        "w4a16": "rknn-toolkit2 2.5.0 offers w4a16 for rk3576 and rv1126b only",
    },
    passes=("host_time_projection", "drop_unit_slice_steps", "simplify", "split_fused_qkv_projection",
            "group_norm_as_conv", "einsum_as_matmul", "attention_key_as_gemm", "tile_attention"),
    # onnxsim saves no build time on 2.5.0 (the toolkit folds constants itself: the demo's build()
    # took 61 s either way, 957 layers either way); it stays available for graphs that need it.
    off_by_default=("simplify",),
    # Rockchip's operator list for toolkit 2.3.2 (RK3588): not supported at all.
    rejected_ops={op: "not in Rockchip's RK3588 operator list" for op in
                  ("GroupNormalization", "Einsum", "Range", "CumSum", "Trilu")},
    # The same list puts these on the CPU. rknn-toolkit2 2.5.0 fuses the UNet's uses of several onto the
    # NPU: no such op in a CPU row of the layer table of tiny, demo or full-size SD 1.5 builds.
    cpu_only_ops={
        "Sin": "", "Cos": "", "ScatterND": "", "ReduceMean": "",
        "Erf": "GELU's Div/Erf/Add/Mul chain becomes exGelu",
        "InstanceNormalization": "the GroupNorm decomposition (Reshape/InstanceNormalization/Reshape/Mul/Add) becomes exNorm",
        "LayerNormalization": "becomes exNorm",
        "Cast": "the UNet's casts (to float32, after attention) are removed",
        "Gather": "",
    },
)
