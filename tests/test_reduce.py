"""The reduction engine on its own (a predicate over node sets, no toolkit) and the cuts it hands the
toolkit (ONNX Runtime on each cut against the whole graph's own tensors)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.common import onnx_runtime
from converter.diagnose.reduce import reduce
from converter.diagnose.subgraph import Cutter, save
from converter.diagnose.tensor_store import TensorStore


def _needs(*nodes: int):
    """A failure that shows whenever every one of `nodes` is kept, and counts its checks."""
    seen = []

    def fails(kept: frozenset[int]) -> bool:
        seen.append(kept)
        return set(nodes) <= kept
    return fails, seen


def test_the_engine_finds_the_nodes_a_failure_needs_in_few_checks():
    fails, seen = _needs(37, 40, 41)
    found = reduce(120, fails, budget_s=60)
    assert found.kept == {37, 40, 41} and found.stopped is None and found.errors == 0
    assert [p.name for p in found.phases] == ["outputs", "inputs", "nodes"]
    assert [p.nodes for p in found.phases] == [42, 5, 3]
    assert found.builds == len(seen) <= 2 * math.ceil(math.log2(120)) + 5 + 3 + 3


def test_a_candidate_the_check_cannot_judge_counts_as_passing_and_is_recorded():
    fails, _ = _needs(5, 9)

    def flaky(kept: frozenset[int]) -> bool:
        if kept == {5, 6, 7, 8}:  # 9 dropped first, in the last phase
            raise RuntimeError("ONNX Runtime: cannot compute this\nsecond line")
        return fails(kept)

    found = reduce(30, flaky, budget_s=60)
    assert found.kept == {5, 9}
    assert found.errors >= 1 and found.first_error == "RuntimeError: ONNX Runtime: cannot compute this"


def test_out_of_budget_a_phase_stops_with_the_smallest_failing_set_so_far():
    calls = []

    def slow(kept: frozenset[int]) -> bool:
        calls.append(kept)
        return 3 in kept

    found = reduce(64, slow, budget_s=0)
    assert found.kept == frozenset(range(64)) and not calls  # nothing checked: the whole graph, seen to fail
    assert found.stopped.startswith("phase outputs stopped after 0 builds")


def _graph(tmp_path):
    """What broke the reduction before: `Resize` with its optional `roi` left out (an empty name), a Reshape
    whose shape is computed from a `Shape` (a constant in a static graph), two outputs, an int64 input."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),                           # 0
        n("Resize", ["c", "", "scales"], ["r"], mode="nearest"),                   # 1
        n("Shape", ["r"], ["r_shape"]),                                            # 2
        n("Slice", ["r_shape", "zero", "two", "zero"], ["batch_channels"]),        # 3
        n("Concat", ["batch_channels", "minus_one"], ["flat_shape"], axis=0),      # 4
        n("Reshape", ["r", "flat_shape"], ["flat"]),                               # 5
        n("Gather", ["table", "ids"], ["picked"], axis=0),                         # 6
        n("Add", ["flat", "picked"], ["y"]),                                       # 7
        n("Sigmoid", ["r"], ["z"]),                                                # 8
        n("Relu", ["c"], ["unused"]),                                              # 9: dead
    ]
    inits = [numpy_helper.from_array(a, name) for name, a in [
        ("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
        ("scales", np.array([1, 1, 2, 2], np.float32)), ("zero", np.array([0], np.int64)),
        ("two", np.array([2], np.int64)), ("minus_one", np.array([-1], np.int64)),
        ("table", rng.standard_normal((10, 1)).astype(np.float32))]]
    graph = helper.make_graph(nodes, "broke-it", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]),
                                                  helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 64]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, tmp_path / "g.onnx")
    feed = {"x": rng.standard_normal((1, 3, 4, 4)).astype(np.float32), "ids": np.array([3, 1, 4, 1], np.int64)}
    np.savez(tmp_path / "feed.npz", **feed)
    everything = onnx_runtime.run_with_tensors(tmp_path / "g.onnx", feed, [o for n in nodes for o in n.output],
                                               tmp_path / "ort")
    return Cutter(tmp_path / "g.onnx", TensorStore(tmp_path / "g.onnx", [str(tmp_path / "feed.npz")],
                                                   tmp_path / "values")), everything


@pytest.mark.parametrize("keep, inputs, outputs", [
    ({1, 2, 3, 4, 5}, ["c"], ["r", "flat"]),          # the empty roi kept as ONNX's "left out"
    ({5, 7}, ["r", "picked"], ["y"]),                  # the computed shape folded, not an input
    ({5, 6, 7}, ["r", "ids"], ["y"]),                  # an int64 input taken from the whole graph's
    ({1, 8}, ["c"], ["r", "z"]),                       # r leaves the cut for the Reshape: an output too
    (set(range(10)), ["x", "ids"], ["y", "z"]),
])
def test_a_cut_computes_what_its_nodes_compute_in_place(tmp_path, keep, inputs, outputs):
    cutter, everything = _graph(tmp_path)
    model = cutter.cut(keep)
    assert [i.name for i in model.graph.input] == inputs and [o.name for o in model.graph.output] == outputs
    onnx.checker.check_model(model, full_check=True)  # static shapes on every input and output
    assert "flat_shape" not in inputs and all(i.type.tensor_type.shape.dim for i in model.graph.input)
    cut = onnx_runtime.run(onnx_runtime.session(save(model, tmp_path / "cut.onnx")),
                           cutter.store.values(inputs))
    for name in outputs:
        np.testing.assert_array_equal(cut[name], everything[name])  # same kernels on the same values


def test_a_cut_that_hands_nothing_on_is_none(tmp_path):
    cutter, _ = _graph(tmp_path)
    assert cutter.cut({9}) is None  # dead
    assert cutter.cut({2, 3}) is None  # shape arithmetic: constants the toolkit folds, no output to give
