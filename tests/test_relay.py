"""Parts relayed: the next part's toolkit starts once the one before is built, at most two run at once,
and a failing part stops the one waiting for its outputs (the real toolkit child, killed)."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from converter.common.errors import BuildFailed
from converter.toolkit import driver
from converter.toolkit.job import ToolkitJob
from converter.toolkit.relay import BUILT, relay

HANG_GUARD_SECONDS = 120  # the waiting part's child takes ~10 s to start and build here


def _parts(lock, running, most, events):
    def build(i: int, tick) -> int:
        with lock:
            events.append(("start", i))
            running[0] += 1
            most[0] = max(most[0], running[0])
        tick("build()", "", 0.0)
        time.sleep(0.2)
        tick(BUILT, "", 0.2)
        with lock:
            events.append(("built", i))
        time.sleep(1.5 if i == 0 else 0.05)  # part 1's simulator run outlasts part 2's build
        with lock:
            running[0] -= 1
            events.append(("end", i))
        return i * 10
    return build


def test_a_part_starts_once_the_one_before_is_built_and_at_most_two_run_at_once():
    lock, running, most = threading.Lock(), [0], [0]
    events: list[tuple[str, int]] = []
    build = _parts(lock, running, most, events)

    assert relay(4, build) == [0, 10, 20, 30]
    for i in range(1, 4):
        assert events.index(("built", i - 1)) < events.index(("start", i))
    assert events.index(("end", 0)) < events.index(("start", 2))  # the third waits for the first to exit
    assert events.index(("start", 1)) < events.index(("end", 0))  # the relay did overlap
    assert most[0] == 2


def test_in_turn_a_part_starts_once_the_one_before_has_ended():
    lock, running, most = threading.Lock(), [0], [0]
    events: list[tuple[str, int]] = []
    assert relay(3, _parts(lock, running, most, events), overlap=False) == [0, 10, 20]
    assert [e for e in events if e[0] != "built"] == [("start", 0), ("end", 0), ("start", 1), ("end", 1),
                                                      ("start", 2), ("end", 2)]
    assert most[0] == 1


def test_the_status_line_shows_the_running_parts_together():
    """One status line for the stage: both parts while they overlap, not one and then the other every tick."""
    lock, running, most = threading.Lock(), [0], [0]
    shown: list[tuple[str | None, float]] = []
    relay(3, _parts(lock, running, most, []), on_tick=lambda phase, line, seconds: shown.append((phase, seconds)))
    phases = [phase for phase, _ in shown]
    assert "part 1 export_rknn() · part 2 build()" in phases  # part 1 simulates while part 2 builds
    assert all(phase.count("part ") <= 2 for phase in phases)
    seconds = [s for _, s in shown]
    assert seconds == sorted(seconds)  # the stage's time, not each child's own


def _add_one(path) -> ToolkitJob:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "add", [x], [y], [one])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return ToolkitJob(path, "rk3588", ("x",), ("y",))


def _waiting(log) -> None:
    """Until the child logging to `log` waits for its inputs."""
    start = time.monotonic()
    while "await_inputs" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() - start < HANG_GUARD_SECONDS
        time.sleep(0.2)


def test_a_failing_part_stops_the_next_one_waiting_for_its_outputs(tmp_path):
    job = _add_one(tmp_path / "add.onnx")
    never = tmp_path / "part1" / "simulator" / "0-0.npy"  # what part 1 would have handed on
    log = tmp_path / "part2.log"

    def build(i: int, tick):
        if i == 0:
            tick(BUILT, "", 0.0)
            _waiting(log)
            raise BuildFailed("part 1 failed in the toolkit")
        return driver.build_and_simulate(job, tmp_path / "part2", [{"x": never}], log, tick)

    start = time.monotonic()
    with pytest.raises(BuildFailed, match="part 1 failed"):
        relay(2, build)
    assert time.monotonic() - start < HANG_GUARD_SECONDS
    assert not never.exists() and not (tmp_path / "part2" / "model.rknn").exists()


def test_the_waiting_part_runs_once_its_inputs_arrive(tmp_path):
    """The real child waits in await_inputs, then computes x + 1 from the file that arrived."""
    job = _add_one(tmp_path / "add.onnx")
    x = np.random.default_rng(0).standard_normal((1, 8, 4, 4)).astype(np.float32)
    handed = tmp_path / "handed.npy"
    log = tmp_path / "part2.log"

    def build(i: int, tick):
        if i == 0:
            tick(BUILT, "", 0.0)
            _waiting(log)
            np.save(tmp_path / "partial.npy", x)  # handed on whole, as the worker does
            (tmp_path / "partial.npy").rename(handed)
            return None
        return driver.build_and_simulate(job, tmp_path / "part2", [{"x": handed}], log, tick)

    _, (_, result) = relay(2, build)
    np.testing.assert_allclose(np.load(result["outputs"][0][0]), x + 1, atol=2e-3)  # float16 on the NPU
    assert result["phases"]["await_inputs"] > 0
