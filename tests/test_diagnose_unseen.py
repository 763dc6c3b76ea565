"""`rkconvert diagnose` on toolkit failures in graphs written here, of the kinds that broke its reduction
before (an optional input left out, inputs that move as the graph shrinks): it must end in a repro that
fails the same way. Both were unknown then; the catalogue has held them since `rkconvert fuzz` met them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import error_lines, rkconvert
from onnx import TensorProto, helper, numpy_helper

# Each reduces in under 25 toolkit builds, under a minute on 2 cores.
DIAGNOSE_HANG_GUARD_SECONDS = 600
REPRO_HANG_GUARD_SECONDS = 300


def _save(tmp_path, name, nodes, inputs, outputs, weights) -> str:
    inits = [numpy_helper.from_array(value, key) for key, value in weights.items()]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, tmp_path / f"{name}.onnx")
    return f"{name}.onnx"


def _cubic_resize(tmp_path) -> str:
    """A cubic Resize between two convolutions, its optional `roi` left out (an empty name, as every
    F.interpolate torch exports): the toolkit dies with SIGSEGV."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), n("Sigmoid", ["c1"], ["s1"]),
             n("Resize", ["s1", "", "scales"], ["r"], mode="cubic"),
             n("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1]), n("Relu", ["c2"], ["y"])]
    return _save(tmp_path, "cubic", nodes, [("x", [1, 4, 16, 16])], [("y", [1, 8, 32, 32])],
                 {"w1": rng.standard_normal((8, 4, 3, 3)).astype(np.float32),
                  "w2": rng.standard_normal((8, 8, 3, 3)).astype(np.float32),
                  "scales": np.array([1, 1, 2, 2], np.float32)})


def _attention(tmp_path) -> str:
    """Self-attention on a conv's features, k transposed after its projection, and a residual: the
    toolkit raises (KeyError) in build(), in the middle of the graph, so the repro's inputs are tensors
    from inside it (q, v and the projection's input), not the graph's input."""
    rng = np.random.default_rng(0)
    channels, tokens = 64, 256
    weight = lambda *shape: (rng.standard_normal(shape) * 0.1).astype(np.float32)  # noqa: E731
    n = helper.make_node
    nodes = [n("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             n("Reshape", ["c0", "tokens_shape"], ["h"]), n("Transpose", ["h"], ["ht"], perm=[0, 2, 1]),
             n("MatMul", ["ht", "wq"], ["q"]), n("MatMul", ["ht", "wk"], ["k"]), n("MatMul", ["ht", "wv"], ["v"]),
             n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), n("MatMul", ["q", "kt"], ["qk"]),
             n("Mul", ["qk", "scale"], ["qk_scaled"]), n("Softmax", ["qk_scaled"], ["p"], axis=-1),
             n("MatMul", ["p", "v"], ["a"]), n("Transpose", ["a"], ["at"], perm=[0, 2, 1]),
             n("Reshape", ["at", "image_shape"], ["a4"]), n("Add", ["a4", "c0"], ["res"]), n("Relu", ["res"], ["y"])]
    return _save(tmp_path, "attention", nodes, [("x", [1, 4, 16, 16])], [("y", [1, channels, 16, 16])],
                 {"w0": weight(channels, 4, 3, 3), "wq": weight(channels, channels), "wk": weight(channels, channels),
                  "wv": weight(channels, channels), "scale": np.array(0.125, np.float32),
                  "tokens_shape": np.array([1, channels, tokens], np.int64),
                  "image_shape": np.array([1, channels, 16, 16], np.int64)})


# Each graph, the pass that would avoid its failure (skipped: the failure is the point), its catalogue entry.
CASES = {"cubic": ((), "cubic-resize"),
         "attention": (("--skip-pass", "attention_key_as_gemm"), "attention-key-projection-keyerror")}


@pytest.fixture(scope="module", params=[_cubic_resize, _attention], ids=["empty-roi", "moved-inputs"])
def diagnosed(request, tmp_path_factory):
    """(graph as written, diagnose's process, its diagnosis folder, diagnosis.json)."""
    work = tmp_path_factory.mktemp(request.param.__name__)
    name = request.param(work)
    result = rkconvert("diagnose", "--target", "rk3588", "--model", name, *CASES[name.removesuffix(".onnx")][0],
                       "--out", "d", cwd=work, timeout=DIAGNOSE_HANG_GUARD_SECONDS)
    folder = work / "d" / "diagnosis"
    return onnx.load(str(work / name)), result, folder, json.loads((folder / "diagnosis.json").read_text())


def test_the_failure_is_reduced_to_a_repro_that_fails_the_same_way_and_recognised(diagnosed):
    source, result, folder, diagnosis = diagnosed
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and not error_lines(result)
    assert diagnosis["known"]["id"] == CASES[source.graph.name][1]
    assert f"fix: {diagnosis['known']['remedy_text']}" in result.stdout
    reduction = diagnosis["reduction"]
    assert reduction["reproduced"] and reduction["stopped"] is None and reduction["candidate_errors"] == 0
    assert reduction["nodes_after"] < reduction["nodes_before"] == len(source.graph.node)
    assert [p["name"] for p in reduction["phases"]] == ["outputs", "inputs", "nodes"]
    assert reduction["builds"] == sum(p["builds"] for p in reduction["phases"])
    log = (folder / "reduce.log").read_text().splitlines()
    assert len(log) == reduction["builds"] and sum("during build()" in line for line in log) >= 1


def test_the_repro_keeps_what_the_failure_needs(diagnosed):
    source, _, folder, diagnosis = diagnosed
    repro = onnx.load(str(folder / "repro.onnx"))
    inputs = [i.name for i in repro.graph.input]
    failure = diagnosis["failure"]
    if source.graph.name == "cubic":
        assert (failure["kind"], failure["detail"]) == ("crash", "SIGSEGV")
        (resize,) = [n for n in repro.graph.node if n.op_type == "Resize"]
        assert list(resize.input)[:2] == ["s1", ""]  # the roi still left out, not a tensor named ""
        assert len(repro.graph.node) <= 2
    else:
        assert failure["kind"] == "error" and "KeyError" in failure["detail"]
        assert "x" not in inputs and set(inputs) <= {o for n in source.graph.node for o in n.output}
        assert {"Softmax", "Transpose"} <= {n.op_type for n in repro.graph.node} and len(repro.graph.node) <= 8
    with np.load(folder / "repro-input.npz") as feed:
        assert sorted(feed.files) == sorted(inputs)


def test_repro_py_fails_the_same_way_with_the_toolkit_alone(diagnosed):
    source, _, folder, diagnosis = diagnosed
    run = subprocess.run([sys.executable, "repro.py"], cwd=folder, capture_output=True, text=True,
                         timeout=REPRO_HANG_GUARD_SECONDS)
    if diagnosis["failure"]["kind"] == "crash":
        assert run.returncode == -11, run.stdout[-2000:]
    else:
        assert run.returncode != 0 and "KeyError" in run.stdout + run.stderr, run.stdout[-2000:]
