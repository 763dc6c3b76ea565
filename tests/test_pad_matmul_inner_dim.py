"""pad_matmul_inner_dim: equal under ONNX Runtime; a UNet with 16-channel attention builds as w8a16 on rk3562."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from converter.builds.builder import build
from converter.builds.request import BuildRequest, CalibSettings, Checks, Gates, HybridSettings
from converter.common import onnx_runtime
from converter.common.progress import Progress
from converter.models import tracing
from converter.models.model_source import resolve
from converter.toolkit import known_failures
from graph_passes import CATALOGUE
from targets import get_chip
from tests.conftest import TINY_RESOLUTION, as_numpy, tiny_unet, unet_inputs

PASS = CATALOGUE["pad_matmul_inner_dim"]
# 16 and 48 channels (block 0 and the up path's skip concatenations): widths the w8a16 compiler dies on.
NARROW = {"block_out_channels": [16, 32], "cross_attention_dim": 16}


def _gemm(trans_b: int) -> onnx.ModelProto:
    weight = np.random.default_rng(0).standard_normal((24, 40) if trans_b else (40, 24)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 40])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 24])
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm", transB=trans_b)], "g",
                              [x], [y], [numpy_helper.from_array(weight, "w"),
                                         numpy_helper.from_array(np.arange(24, dtype=np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_outputs_equal_under_onnxruntime(tmp_path):
    unet = tiny_unet(**NARROW)
    tracing.trace(unet, TINY_RESOLUTION, tmp_path / "unet.onnx")
    before = onnx.load(str(tmp_path / "unet.onnx"))
    after, report, host = PASS.run(before)
    assert not host and len(report.rewrites) > 10
    # The raw export's time embedding (its input's shape is not inferred there) is host_time_projection's to
    # take off the graph before this pass runs in a build.
    assert report.skipped == ["/time_embedding/linear_1/Gemm: padding its activation needs its static shape"]
    assert "/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/MatMul: inner dimension 16 computed as 32" \
        in report.rewrites
    assert PASS.run(after)[1].rewrites == []  # nothing narrow is left
    feed = as_numpy(unet_inputs(unet))
    ref = onnx_runtime.run(onnx_runtime.session(before), feed)["out_sample"]
    out = onnx_runtime.run(onnx_runtime.session(after), feed)["out_sample"]
    # Zero columns add exact zeros, but a wider product may sum in another order: float32 rounding.
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    x = {"x": np.random.default_rng(1).standard_normal((2, 40)).astype(np.float32)}
    for trans_b in (0, 1):
        gemm = _gemm(trans_b)
        padded, report, _ = PASS.run(gemm)
        assert report.rewrites == ["gemm: inner dimension 40 computed as 64"]
        np.testing.assert_allclose(onnx_runtime.run(onnx_runtime.session(padded), x)["y"],
                                   onnx_runtime.run(onnx_runtime.session(gemm), x)["y"], rtol=1e-5, atol=1e-5)


def test_a_unet_with_16_channel_attention_builds_as_w8a16_on_rk3562(tmp_path):
    """Without the pass its build died in 2 runs of 2, with it built in 3 of 3 (52.1 dB)."""
    tiny_unet(**NARROW).save_pretrained(tmp_path / "narrow-unet")
    req = BuildRequest(resolve(str(tmp_path / "narrow-unet")), get_chip("rk3562"), tmp_path / "out", dtype="w8a16",
                       gates=Gates(min_psnr=45), checks=Checks(samples=2, layer_report="off"),
                       hybrid=HybridSettings(enabled=False), calib=CalibSettings(samples=4, trajectories=1))
    report = build(req, Progress(Console(file=open(tmp_path / "progress.txt", "w")))).to_json()
    assert report["status"] == "ok" and report["dtype"] == "w8a16" and report["output_psnr_db"] >= 45
    applied = {p["pass"]: len(p["rewrites"]) for p in report["passes"]}
    assert applied["pad_matmul_inner_dim"] > 10 and applied["pad_conv_channels"] > 2


def test_runs_for_rk3562_w8a16_only_and_is_the_catalogues_fix():
    rk3562 = get_chip("rk3562")
    assert PASS.name in rk3562.passes_for(list(rk3562.passes), "w8a16")
    assert PASS.name not in rk3562.passes_for(list(rk3562.passes), "float16")
    assert PASS.name not in get_chip("rk3588").passes
    seen = known_failures.Seen("crash", "build()", "SIGSEGV", "rk3562", "2.5.0", ops=["MatMul"])
    assert known_failures.match(seen, known_failures.load()).remedy == {"pass": PASS.name}
