"""The emulation behind the measured sensitivity: ONNX Runtime with one tensor fake-quantized at a time."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.builds.stages.sensitivity import EXACT_DB, Fitted, Sensitivities
from converter.common import onnx_runtime
from converter.common.accuracy import compare
from converter.common.errors import BuildFailed
from converter.common.onnx_graph import Graph
from converter.mixed_precision.proxy import carried
from converter.mixed_precision.sensitivity import Point, Sensitivity, emulate
from converter.toolkit.naming import named_tensor
from converter.toolkit.quant_config import QuantizedTensor


def _chain() -> onnx.ModelProto:
    """x -> Conv -> Relu -> Conv -> y, with the first Conv's output also an output of the graph."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(8, 3, 3, 3)).astype(np.float32), rng.normal(size=(2, 8, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["/a/Conv_output_0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["/a/Conv_output_0"], ["/a/Relu_output_0"]),
             helper.make_node("Conv", ["/a/Relu_output_0", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6]),
                               helper.make_tensor_value_info("/a/Conv_output_0", TensorProto.FLOAT, [1, 8, 6, 6])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _fake_quant(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    q = np.clip(np.round(x / scale) + zero_point, -128, 127)  # ONNX's QuantizeLinear rounds half to even, as np
    return ((q - zero_point) * scale).astype(np.float32)


def test_the_probe_graph_computes_the_model_and_quantizes_only_the_tensor_asked_for(tmp_path):
    model = _chain()
    path = tmp_path / "chain.onnx"
    onnx.save(model, str(path))
    feed = {"x": np.random.default_rng(1).normal(size=(1, 3, 6, 6)).astype(np.float32)}
    float_out = onnx_runtime.run(onnx_runtime.session(path), feed)
    conv, relu = float_out["/a/Conv_output_0"], np.maximum(float_out["/a/Conv_output_0"], 0)
    # As the toolkit's config has them: its names (the node's; a layout suffix; a fused Relu's output named
    # after the Conv, as `_sw` names a SiLU after a GroupNorm), and the ranges it observed.
    start = "/a/Conv_output_0"
    quantized = [QuantizedTensor("x_int8", "x", 0.05, 3, float(feed["x"].min()), float(feed["x"].max())),
                 QuantizedTensor("/a/Conv_output_0_relu", start, 0.09, -128, 0.0, float(relu.max())),
                 QuantizedTensor("/a/Conv_output_0_rs", start, 0.2, -7, float(conv.min()), float(conv.max())),
                 QuantizedTensor("/a/Conv_output_0_tp", start, 0.2, -7, -99.0, 99.0)]  # holds no tensor
    quantized.append(quantized[0])  # where two parts meet both quantize the tensor, under one name: named once
    emulation = emulate(path, quantized, [feed], 1, tmp_path / "scratch")
    ranking = emulation.ranking()
    assert [(p.tensor, p.names) for p in emulation.points] == [
        ("x", ("x_int8",)), ("/a/Relu_output_0", ("/a/Conv_output_0_relu",)),
        ("/a/Conv_output_0", ("/a/Conv_output_0_rs",))]

    nothing = emulation.outputs(feed, np.zeros(3, np.float32))
    assert np.array_equal(nothing, np.concatenate([float_out["y"].ravel(), float_out["/a/Conv_output_0"].ravel()]))
    assert emulation.noise(np.zeros(3, np.float32)) == 0.0

    # Only the Relu's output quantized: the second Conv reads its fake-quantized values, the first
    # Conv's output (a graph output too) stays exact.
    w2 = numpy_helper.to_array(model.graph.initializer[1])
    expected_y = np.einsum("oc,bchw->bohw", w2[:, :, 0, 0], _fake_quant(relu, 0.09, -128))
    out = emulation.outputs(feed, np.array([0, 1, 0], np.float32))
    np.testing.assert_allclose(out[:expected_y.size], expected_y.ravel(), rtol=1e-5, atol=1e-5)
    assert np.array_equal(out[expected_y.size:], float_out["/a/Conv_output_0"].ravel())

    # A graph input quantized: every reader takes the quantized copy.
    out = emulation.outputs(feed, np.array([1, 0, 0], np.float32))
    quantized_input = onnx_runtime.run(onnx_runtime.session(path), {"x": _fake_quant(feed["x"], 0.05, 3)})
    np.testing.assert_allclose(out[:expected_y.size], quantized_input["y"].ravel(), rtol=1e-5, atol=1e-5)

    assert sorted(s.tensor for s in ranking) == sorted(p.tensor for p in emulation.points)
    assert [s.noise for s in ranking] == sorted((s.noise for s in ranking), reverse=True) and ranking[-1].noise > 0
    assert emulation.noise(np.ones(3, np.float32)) > max(s.noise for s in ranking)
    # The curve: the first k of an order left float; k = 0 is everything quantized, k = 3 nothing.
    curve = emulation.curve([feed], [s.tensor for s in ranking], [0, 3])
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    everything = compare(emulation.outputs(feed, ones), emulation.outputs(feed, zeros))
    assert curve == {0: everything["psnr_db"], 3: float("inf")} and curve[0] < 60


def test_toolkit_names_lead_to_the_onnx_tensor_they_start_from(tmp_path):
    nodes = [helper.make_node("MatMul", ["q", "k"], ["/b/attn1/MatMul_output_0"], name="/b/attn1/MatMul"),
             helper.make_node("Softmax", ["/b/attn1/MatMul_output_0"], ["/b/attn1/Softmax_output_0"],
                              name="/b/attn1/Softmax"),
             helper.make_node("MatMul", ["/b/attn1/Softmax_output_0", "k"], ["/b/attn1/MatMul_1_output_0"],
                              name="/b/attn1/MatMul_1"),
             helper.make_node("LayerNormalization", ["/b/attn1/MatMul_1_output_0", "k"], ["/b/norm1/ln"],
                              name="/b/norm1/LayerNormalization")]
    value = helper.make_tensor_value_info
    inputs = [value("q", TensorProto.FLOAT, [4, 4]), value("k", TensorProto.FLOAT, [4, 4])]
    graph = helper.make_graph(nodes, "names", inputs, [value("/b/norm1/ln", TensorProto.FLOAT, [4, 4])])
    path = tmp_path / "names.onnx"
    onnx.save(helper.make_model(graph), str(path))
    g = Graph.load(path)
    assert named_tensor("/b/attn1/MatMul_output_0_mm_tp_sw", g) == "/b/attn1/MatMul_output_0"
    assert named_tensor("/b/norm1/LayerNormalization#1", g) == "/b/norm1/ln"
    assert named_tensor("q_int8", g) == "q"
    # exSDPAttention's own tensors: the scores and the softmax of the same attention module
    assert named_tensor("/b/attn1/MatMul_1_2sdpa_q_softmax", g) == "/b/attn1/Softmax_output_0"
    assert named_tensor("/b/attn1/MatMul_1_2sdpa_q_matmul", g) == "/b/attn1/MatMul_output_0"
    assert named_tensor("/b/attn1/MatMul_1_output_0_sdpa", g) == "/b/attn1/MatMul_1_output_0"
    assert named_tensor("/c/Conv_output_0_rs", g) is None
    # a tile's (graph_passes/tile_attention.py), in a graph whose attention is whole
    assert named_tensor("/b/attn1/tile3/MatMul_1_2sdpa_q_softmax", g) == "/b/attn1/Softmax_output_0"
    assert named_tensor("/b/attn1/tile0/MatMul_1_output_0_sdpa", g) == "/b/attn1/MatMul_1_output_0"


def test_the_predicted_count_follows_the_curve_corrected_by_the_builds_measured():
    """The emulated curve between its points is linear, but never towards the all-float end (EXACT_DB);
    each measured build moves the prediction by the emulation's error there, linearly in between."""
    found = Sensitivities(None, [{}] * 10, {0: 20.0, 1: 22.0, 5: 30.0, 10: EXACT_DB}, 0, None)
    assert [found.emulated(k) for k in (0, 3, 5, 9)] == [20.0, 26.0, 30.0, 30.0]
    assert found.predicted(29, {0: 21.0}, range(11)) == 4  # the emulation 1 dB pessimistic: 28 is enough
    assert found.predicted(26, {0: 21.0, 3: 24.0}, range(11)) == 4  # 2 dB optimistic from k = 3 on
    assert found.predicted(26, {0: 21.0, 3: 24.0}, range(5, 11)) == 5
    assert found.predicted(500, {0: 21.0}, range(11)) == 10 and found.predicted(500, {0: 21.0}, range(10)) is None


def test_a_graph_the_torch_evaluation_does_not_cover_is_named():
    from converter.common.onnx_torch import TorchGraph, Unsupported

    node = helper.make_node("Celu", ["x"], ["y"])
    model = helper.make_model(helper.make_graph([node], "g",
                                                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]))
    with pytest.raises(Unsupported, match="Celu"):
        TorchGraph(model)


def test_inputs_are_strided_to_a_smaller_ranking_graph():
    fit = Fitted({"sample": {"shape": [1, 4, 2, 3]}, "t_emb": {"shape": [1, 8]}})
    sample, t_emb = np.arange(4 * 8 * 12, dtype=np.float32).reshape(1, 4, 8, 12), np.ones((1, 8), np.float32)
    fitted = fit({"sample": sample, "t_emb": t_emb})
    assert np.array_equal(fitted["sample"], sample[:, :, ::4, ::4]) and fitted["t_emb"] is t_emb
    assert fit.strides({"sample": sample, "t_emb": t_emb}) == {"sample": (1, 1, 4, 4)}
    assert fit.describe({"sample": sample, "t_emb": t_emb}) == "sample [1, 4, 2, 3] (every 1x1x4x4)"
    with pytest.raises(BuildFailed, match=r"input sample \[1, 4, 9, 12\] cannot be strided"):
        fit({"sample": np.zeros((1, 4, 9, 12), np.float32), "t_emb": t_emb})


def test_the_builds_tensors_are_ordered_by_the_proxys_gain_times_their_own_error_power():
    """At the proxy `a` costs more than `b`, but `b` amplifies its error 100x more; at the build's
    resolution `b`'s first tile errs most: it goes first (the proxy's own order would not)."""
    proxy_ranked = [Sensitivity("a", ("A",), 1e-3), Sensitivity("b", ("B0", "B1"), 1e-4)]
    where = [Point("a", ("A",), 1.0, 0), Point("t0/b", ("B0",), 1.0, 0), Point("t1/b", ("B1",), 1.0, 0)]
    ranked = carried(proxy_ranked, {"a": 1e-2, "b": 1e-5}, where, {"a": 1e-2, "t0/b": 1e-3, "t1/b": 1e-5})
    assert [s.tensor for s in ranked] == ["t0/b", "a", "t1/b"]
    assert np.allclose([s.noise for s in ranked], [1e-2, 1e-3, 1e-4])
