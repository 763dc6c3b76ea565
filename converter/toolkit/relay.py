"""A graph's parts built as a relay: part i+1's toolkit starts once part i has finished its build().

A part's toolkit child runs build(), then export, then the simulator on its check inputs, which are
earlier parts' simulator outputs. Built strictly one after another, each part also pays its start (the
interpreter, the toolkit's import, load_onnx) and its simulator run alone. In a relay the next part
starts while the one before exports and simulates; the next part's simulator waits for the inputs it
needs (converter/toolkit/worker.py, phase `await_inputs`).
Memory: part i+1 is still starting, short of the peak at the end of its build(), while part i
finishes. At most two children at once: a part starts only after the one two before it has exited.
SD 1.5 at 512 px in 2 parts, rk3588 float16 (tools/bench_build.py, this machine: 2 cores, 24 GiB): the
toolkit stage took 240 s relayed against 259 s in turn, the process tree peaked at 9.9 GB against 8.2 GB
(`--parts-in-turn` keeps the latter; README, "Full-size builds in less memory").
"""

from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")
# The worker's phase after build(): a part in it has its model compiled (converter/toolkit/worker.py).
BUILT = "export_rknn()"
Tick = Callable[[str | None, str, float], None]


class _Abandoned(Exception):
    """Raised in a part's tick once another part has failed: its child is stopped (Child.wait kills it)."""


def relay(count: int, build: Callable[[int, Tick], T], on_tick: Tick | None = None, overlap: bool = True) -> list[T]:
    """`build(i, tick)` for i in 0..count-1, each in its own thread, started as the module says (without
    `overlap`: once the one before has ended); `tick` must reach the toolkit child's wait
    (driver.build_and_simulate's on_tick). `on_tick` gets every running part's phase ("part 1 inference ·
    part 2 build()") and the seconds since the relay began. Returns the results in order; the first part to
    fail stops the others and its error is raised."""
    built = [threading.Event() for _ in range(count)]
    ended = [threading.Event() for _ in range(count)]
    failed = threading.Event()
    results: list = [None] * count
    errors: list[BaseException | None] = [None] * count
    # The running parts' latest phases, shown together: each part's own tick alone would flip the one
    # status line between the two parts every half second.
    phases: dict[int, str] = {}
    shown_lock, start = threading.Lock(), time.monotonic()

    def tick_of(i: int) -> Tick:
        def tick(phase: str | None, last_line: str, seconds: float) -> None:
            if failed.is_set():
                raise _Abandoned
            if phase == BUILT:
                built[i].set()
            if on_tick is None:
                return
            with shown_lock:  # one status line, updated by one part at a time
                if phase:
                    phases[i] = phase
                shown = " · ".join(f"part {j + 1} {p}" if count > 1 else p for j, p in sorted(phases.items()))
                on_tick(shown or None, last_line, time.monotonic() - start)
        return tick

    def run(i: int) -> None:
        try:
            results[i] = build(i, tick_of(i))
        except BaseException as e:  # handed to the caller's thread below
            errors[i] = e
            failed.set()
        finally:
            with shown_lock:
                phases.pop(i, None)
            built[i].set()
            ended[i].set()

    def may_start(i: int) -> bool:
        if not overlap:
            return i == 0 or ended[i - 1].is_set()
        return i == 0 or (built[i - 1].is_set() and (i < 2 or ended[i - 2].is_set()))

    threads = []
    try:
        for i in range(count):
            while not (failed.is_set() or may_start(i)):
                failed.wait(0.2)
            if failed.is_set():
                break
            threads.append(threading.Thread(target=run, args=(i,), name=f"toolkit-part{i + 1}"))
            threads[-1].start()
    except BaseException:  # e.g. Ctrl-C: the running parts stop at their next tick
        failed.set()
        raise
    finally:
        for t in threads:
            t.join()
    first = next((e for e in errors if e is not None and not isinstance(e, _Abandoned)), None)
    if first is not None:
        raise first
    return results
