"""GroupNorm at 2x2 rewritten as convolutions: the same function, and no CPU layer in the toolkit."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.common import onnx_runtime
from graph_passes import CATALOGUE
from converter.toolkit.layer_table import cpu_ops, placement
from tests.rknn_helpers import rknn_psnr


def conv_group_norm_conv(channels: int, groups: int, side: int, affine_in_norm: bool = False) -> onnx.ModelProto:
    """Conv -> GroupNorm as torch exports it (Reshape, InstanceNormalization, Reshape, Mul, Add) -> Conv."""
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 2, groups) if affine_in_norm else np.ones(groups)
    bias = rng.standard_normal(groups) if affine_in_norm else np.zeros(groups)
    inits = {"w": rng.standard_normal((channels, channels, 3, 3)) * 0.1, "to_groups": np.array([1, groups, -1]),
             "back": np.array([1, channels, side, side]), "in_scale": scale, "in_bias": bias,
             "gamma": rng.standard_normal((channels, 1, 1)), "beta": rng.standard_normal((channels, 1, 1))}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4, name="/conv1/Conv"),
             helper.make_node("Reshape", ["c", "to_groups"], ["g"], name="/norm/Reshape"),
             helper.make_node("InstanceNormalization", ["g", "in_scale", "in_bias"], ["n"], epsilon=1e-5,
                              name="/norm/InstanceNormalization"),
             helper.make_node("Reshape", ["n", "back"], ["r"], name="/norm/Reshape_1"),
             helper.make_node("Mul", ["r", "gamma"], ["m"], name="/norm/Mul"),
             helper.make_node("Add", ["m", "beta"], ["a"], name="/norm/Add"),
             helper.make_node("Conv", ["a", "w"], ["y"], pads=[1] * 4, name="/conv2/Conv")]
    shape = [1, channels, side, side]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              [numpy_helper.from_array(np.asarray(v, np.int64 if k in ("to_groups", "back") else np.float32), k)
                               for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def _feed(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32) * 3 + 1}


@pytest.mark.parametrize("channels, groups, affine", [(96, 16, False), (160, 8, False), (32, 8, True)])
def test_rewrite_computes_the_same_group_norm(channels, groups, affine):
    model = conv_group_norm_conv(channels, groups, 2, affine)
    rewritten, report, _ = CATALOGUE["group_norm_as_conv"].run(model)
    assert len(report.rewrites) == 1 and not report.skipped
    ops = [n.op_type for n in rewritten.graph.node]
    assert "InstanceNormalization" not in ops and ops.count("Reshape") == 0 and ops.count("Conv") == 6
    feed = _feed(model)
    before = onnx_runtime.run(onnx_runtime.session(model), feed)["y"]
    after = onnx_runtime.run(onnx_runtime.session(rewritten), feed)["y"]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())


def test_sizes_the_toolkit_keeps_on_the_npu_are_left_alone():
    _, report, _ = CATALOGUE["group_norm_as_conv"].run(conv_group_norm_conv(96, 16, 4))
    assert not report.rewrites and "4x4 stays on the NPU" in report.skipped[0]


def test_the_toolkit_runs_the_rewritten_group_norm_on_the_npu(tmp_path):
    model = conv_group_norm_conv(96, 16, 2)
    rewritten, _, _ = CATALOGUE["group_norm_as_conv"].run(model)
    feed = _feed(model)
    as_exported = rknn_psnr(tmp_path / "exported", model, feed)
    assert [r["op"] for r in cpu_ops(placement((tmp_path / "exported" / "rknn.log").read_text()))] == ["Reshape"]
    assert rknn_psnr(tmp_path / "rewritten", rewritten, feed) >= as_exported - 3
    rows = placement((tmp_path / "rewritten" / "rknn.log").read_text())
    assert cpu_ops(rows) == []
    assert "Expand" not in {r["op"] for r in rows}  # no broadcast the layer report could not place
