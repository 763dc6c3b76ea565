"""The passes written for failures `rkconvert fuzz` found: each graph fails in the toolkit as it is, computes
the same in ONNX Runtime after the pass, and then builds into a .rknn that matches ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.common import onnx_runtime
from converter.diagnose import probe
from converter.fuzz.graphs import random_graph
from converter.fuzz.trial import normal_feed
from converter.toolkit.job import ToolkitSettings
from graph_passes import CATALOGUE

GATE_DB = 60.0  # float16 of these small graphs lands at 70-90 dB against ONNX Runtime
TOKENS, WIDTH = 64, 16
EINSUM_SEED = 91


def _model(nodes, inputs, output, weights) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "found", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                               for n, s in inputs],
                              [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _swap(x: str, shape: list[int]) -> tuple[list, dict]:
    """Halves of the last axis swapped by two Slices with an explicit steps input, as torch.onnx writes them."""
    half = shape[-1] // 2
    nodes = [helper.make_node("Slice", [x, "half", "end", "last", "ones"], ["high"]),
             helper.make_node("Slice", [x, "zero", "half", "last", "ones"], ["low"]),
             helper.make_node("Concat", ["high", "low"], ["y"], axis=-1)]
    return nodes, {"zero": np.array([0], np.int64), "half": np.array([half], np.int64),
                   "end": np.array([shape[-1]], np.int64), "last": np.array([-1], np.int64),
                   "ones": np.array([1], np.int64)}


def flip_rank2() -> onnx.ModelProto:
    """The timestep projection's flip_sin_to_cos alone: SIGSEGV."""
    nodes, weights = _swap("x", [1, 32])
    return _model(nodes, [("x", [1, 32])], ("y", [1, 32]), weights)


def swap_after_matmul() -> onnx.ModelProto:
    """The same swap of a projection's output: KeyError '..._tp'."""
    nodes, weights = _swap("h", [1, TOKENS, WIDTH])
    weights["w"] = (np.random.default_rng(0).standard_normal((WIDTH, WIDTH)) / 4).astype(np.float32)
    return _model([helper.make_node("MatMul", ["x", "w"], ["h"])] + nodes, [("x", [1, TOKENS, WIDTH])],
                  ("y", [1, TOKENS, WIDTH]), weights)


def attention(heads_split: bool = False, heads: int = 1) -> onnx.ModelProto:
    """Batch-1 attention whose keys are a projection of the input: with one head (rank-3 scores) a KeyError
    '..._mm'; `heads_split` goes through diffusers' Reshape/Transpose/Reshape (head_to_batch_dim)."""
    rng = np.random.default_rng(1)
    d = WIDTH // heads
    n = helper.make_node
    keys = [n("MatMul", ["x", "wk"], ["k"])]
    weights = {"wk": (rng.standard_normal((WIDTH, WIDTH)) / 4).astype(np.float32), "scale": np.float32(d ** -0.5)}
    if heads_split:
        weights.update(split=np.array([1, TOKENS, heads, d], np.int64), fold=np.array([heads, TOKENS, d], np.int64))
        keys += [n("Reshape", ["k", "split"], ["k4"]), n("Transpose", ["k4"], ["k4t"], perm=[0, 2, 1, 3]),
                 n("Reshape", ["k4t", "fold"], ["kh"])]
        for name in ("q", "v"):
            keys += [n("Reshape", [name, "split"], [f"{name}4"]),
                     n("Transpose", [f"{name}4"], [f"{name}4t"], perm=[0, 2, 1, 3]),
                     n("Reshape", [f"{name}4t", "fold"], [f"{name}h"])]
        q, v, k = "qh", "vh", "kh"
    else:
        q, v, k = "q", "v", "k"
    nodes = keys + [n("Transpose", [k], ["kt"], perm=[0, 2, 1]), n("MatMul", [q, "kt"], ["scores"]),
                    n("Mul", ["scores", "scale"], ["scaled"]), n("Softmax", ["scaled"], ["p"], axis=-1),
                    n("MatMul", ["p", v], ["y"])]
    lead = heads if heads_split else 1
    return _model(nodes, [("x", [1, TOKENS, WIDTH]), ("q", [1, TOKENS, WIDTH]), ("v", [1, TOKENS, WIDTH])],
                  ("y", [lead, TOKENS, d if heads_split else WIDTH]), weights)


def _built(model: onnx.ModelProto, folder) -> object:
    """The toolkit's Failure building `model` as float16 for rk3588 and checking it at GATE_DB, or None."""
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save(model, path)
    np.savez(folder / "feed.npz", **normal_feed(model, np.random.default_rng(2)))
    settings = probe.Probe(ToolkitSettings("rk3588"), 120.0, str(path), [str(folder / "feed.npz")], GATE_DB)
    return probe.run(path, settings, folder / "run")


def einsum_attention() -> onnx.ModelProto:
    """The fuzzer's seed 91: tokens through a two-head self-attention written with Einsum: IndexError."""
    return random_graph(EINSUM_SEED).model


@pytest.mark.parametrize("make, pass_name, fails_as, tolerance", [
    (flip_rank2, "drop_unit_slice_steps", ("crash", "SIGSEGV"), 0),
    (swap_after_matmul, "drop_unit_slice_steps", ("error", "KeyError"), 0),
    (attention, "attention_key_as_gemm", ("error", "KeyError"), 0),
    (lambda: attention(heads_split=True), "attention_key_as_gemm", ("error", "KeyError"), 0),
    # ONNX Runtime's Einsum and MatMul kernels sum the same products in another order
    (einsum_attention, "einsum_as_matmul", ("error", "IndexError"), 1e-5),
], ids=["flip-rank2", "swap-after-matmul", "attention", "attention-folded-heads", "einsum-attention"])
def test_the_pass_turns_a_toolkit_failure_into_a_faithful_build(tmp_path, make, pass_name, fails_as, tolerance):
    model = make()
    before = _built(model, tmp_path / "before")
    assert before is not None and before.kind == fails_as[0] and fails_as[1] in before.detail
    rewritten, report, _ = CATALOGUE[pass_name].run(model)
    assert report.rewrites, report.skipped
    feed = normal_feed(model, np.random.default_rng(3))
    ours, theirs = (onnx_runtime.run(onnx_runtime.session(m), feed)[model.graph.output[0].name]
                    for m in (rewritten, model))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=tolerance * np.abs(theirs).max())
    assert _built(rewritten, tmp_path / "after") is None  # builds, and within GATE_DB of ONNX Runtime


def test_multi_head_attention_is_left_alone():
    """Folded heads with more than one (the batch of the scores is the heads): the toolkit builds it as is."""
    _, report, _ = CATALOGUE["attention_key_as_gemm"].run(attention(heads_split=True, heads=2))
    assert report.rewrites == []


def test_steps_other_than_one_are_kept():
    model = flip_rank2()
    for init in model.graph.initializer:
        if init.name == "ones":
            init.CopyFrom(numpy_helper.from_array(np.array([2], np.int64), "ones"))
    _, report, _ = CATALOGUE["drop_unit_slice_steps"].run(model)
    assert report.rewrites == [] and "steps other than 1" in report.skipped[0]
