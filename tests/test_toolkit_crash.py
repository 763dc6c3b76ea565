"""A toolkit that dies takes only its child process down, and the user is told how and where."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import onnx
import psutil
import pytest
from onnx import TensorProto, helper

from converter.common.errors import BuildFailed
from converter.toolkit import driver
from converter.toolkit.child import log_lines, run_module
from converter.toolkit.fork_server import ForkServer
from converter.toolkit.job import ToolkitJob

from conftest import rkconvert, tiny_unet


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


def test_a_forked_child_runs_as_python_m_would(tmp_path, monkeypatch):
    """The fork server has started before the variable is set: the child still sees it, its own working
    folder first on sys.path, its arguments, and its own peak memory."""
    (tmp_path / "quiet.py").write_text("")
    run_module("quiet", [], tmp_path, tmp_path / "quiet.log", "toy")
    (tmp_path / "echo.py").write_text(
        "import os, sys\nimport numpy\nbig = numpy.ones(64 << 20, numpy.uint8)\n"
        "print(os.environ['RKCONVERT_TEST_VALUE'], os.getcwd(), sys.argv[1:], __name__)\n")
    monkeypatch.setenv("RKCONVERT_TEST_VALUE", "seen")
    run = run_module("echo", ["a", "b c"], tmp_path, tmp_path / "echo.log", "toy")
    assert log_lines(run.log.read_text()) == [f"seen {tmp_path} ['a', 'b c'] __main__"]
    assert run.peak_rss_bytes > 64 << 20


def test_a_server_with_preloads_hands_its_modules_and_separate_streams_to_the_child(tmp_path):
    server = ForkServer(preload=("json.tool",))
    try:
        (tmp_path / "streams.py").write_text("import sys\nprint('json.tool' in sys.modules)\n"
                                             "print('to stderr', file=sys.stderr)\nsys.exit(3)\n")
        pid = server.start("streams", [], tmp_path, tmp_path / "out", tmp_path / "err", env={})
        while (ended := server.ended(pid)) is None:
            time.sleep(0.05)
    finally:
        server.close()
    assert os.waitstatus_to_exitcode(ended[0]) == 3
    assert (tmp_path / "out").read_text() == "True\n"
    assert (tmp_path / "err").read_text() == "to stderr\n"


def test_the_cli_forked_for_the_tests_is_stopped_at_its_timeout(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "tiny-unet")
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", cwd=tmp_path, timeout=2)
    assert time.monotonic() - start < 30
    assert not (tmp_path / "build" / "tiny-unet-rk3588" / "report.json").exists()


def test_toolkit_children_die_with_the_process_that_started_them(tmp_path):
    """rkconvert killed from outside (the OOM killer, a matrix executor) leaves no toolkit child running."""
    (tmp_path / "sleeper.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    starter = ("import sys, time\nfrom pathlib import Path\nfrom converter.toolkit.child import Child\n"
               "folder = Path(sys.argv[1])\nchild = Child('sleeper', [], folder, folder / 's.log', 'toy')\n"
               "print(child.pid, flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", starter, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        job = psutil.Process(int(proc.stdout.readline()))
        deadline = time.monotonic() + 60
        log = tmp_path / "s.log"  # opened by the child once forked: it may not be there yet
        while not (log.exists() and "up" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job.is_running()
    finally:
        proc.kill()
        proc.wait()
    assert psutil.wait_procs([job], timeout=30)[1] == []
