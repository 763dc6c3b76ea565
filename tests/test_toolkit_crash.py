"""A toolkit that dies takes only its child process down, and the user is told how and where."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from converter.toolkit.child import log_lines, run_module
from converter.common.errors import BuildFailed
from converter.toolkit import driver
from converter.toolkit.job import ToolkitJob


def flip_reproducer(channels: int = 160) -> onnx.ModelProto:
    """diffusers' flip_sin_to_cos as torch.onnx exports it: Slice + Slice + Concat of a rank-2 [1, C]
    tensor, each Slice with an explicit `steps` input. Without `steps`, or on a rank-4 tensor, the
    toolkit builds it; with `steps` on rank 2 or 3 it dies (measured with rknn-toolkit2 2.5.0)."""
    half = channels // 2
    const = lambda name, v: helper.make_tensor(name, TensorProto.INT64, [1], [v])  # noqa: E731
    nodes = [
        helper.make_node("Slice", ["x", "half", "max", "axis", "step"], ["hi"]),
        helper.make_node("Slice", ["x", "zero", "half", "axis", "step"], ["lo"]),
        helper.make_node("Concat", ["hi", "lo"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "flip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels])],
        [const("half", half), const("max", 2**63 - 1), const("zero", 0), const("axis", 1), const("step", 1)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_three_node_reproducer_kills_the_toolkit_not_us(tmp_path):
    path = tmp_path / "flip.onnx"
    onnx.save(flip_reproducer(), str(path))
    out = tmp_path / "out"
    log = tmp_path / "logs" / "rknn.log"
    with pytest.raises(BuildFailed) as failure:
        driver.build_and_simulate(ToolkitJob(path, "rk3588", ("x",), ("y",)), out, [], log)
    message = str(failure.value)
    assert "rknn-toolkit2 2.5.0 died with SIGSEGV during build()" in message
    assert "\n" not in message
    assert failure.value.details[-1] == f"full log: {log}"
    # The log tail shows the last rewrite the toolkit applied before dying.
    assert "fuse_slice_slice_concat_to_conv" in failure.value.details[-2]
    assert not list(out.rglob("*.rknn"))
    assert not list(out.glob("scratch-*"))


def test_abort_and_error_exits_are_named(tmp_path):
    (tmp_path / "aborter.py").write_text("import os\nprint('@@rkconvert phase boom()', flush=True)\nos.abort()\n")
    (tmp_path / "refuser.py").write_text(
        "import sys\nprint('@@rkconvert phase config()')\nprint('@@rkconvert error config() returned -1')\nsys.exit(3)\n")
    with pytest.raises(BuildFailed, match=r"^toy died with SIGABRT during boom\(\) after \d+ s$"):
        run_module("aborter", [], tmp_path, tmp_path / "a.log", "toy")
    with pytest.raises(BuildFailed, match=r"^toy failed \(exit 3\): config\(\) returned -1 during config\(\)"):
        run_module("refuser", [], tmp_path, tmp_path / "r.log", "toy")


def test_progress_bars_read_as_their_last_state():
    text = "I Loading :   0%|  | 0/3\rI Loading : 100%|##| 3/3\n\x1b[1;33mW\x1b[0m warn\n\n"
    assert log_lines(text) == ["I Loading : 100%|##| 3/3", "W warn"]


def test_reproducer_is_what_onnxruntime_calls_a_flip():
    import onnxruntime as ort

    x = np.arange(160, dtype=np.float32)[None]
    y = ort.InferenceSession(flip_reproducer().SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, np.concatenate([x[:, 80:], x[:, :80]], axis=1))
