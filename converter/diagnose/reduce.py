"""Shrink a failing graph to a small one that fails the same way: Polygraphy's `debug reduce`.

Polygraphy keeps the reduction engine apart from the check, which is what this needs: its engine
(bisect over the graph's outputs, then its inputs; then one node at a time) freezes dangling branches
to values ONNX Runtime computes from the recorded inputs, and runs `converter.diagnose.check` on each
candidate, which builds it with the toolkit in a child process and compares the failure class.
Polygraphy runs in a child too (as `python -m converter.diagnose.reduce debug reduce ...`).
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from converter.toolkit.child import run_module

_ITERATION = re.compile(r"(PASSED|FAILED) \| Iteration \d+")
MODES = ("bisect", "linear")


@dataclass(frozen=True)
class Reduction:
    nodes_before: int
    nodes_after: int
    builds: int  # candidates the toolkit built
    seconds: float


def _freeze_inputs(feed_npz: str, path: Path) -> Path:
    """The check input in Polygraphy's data format, to freeze dangling branches with real values."""
    from polygraphy.json import save_json

    with np.load(feed_npz) as data:
        save_json([dict(data)], str(path))
    return path


def reduce(model: Path, probe_json: Path, wanted_json: Path, feed_npz: str, out: Path, folder: Path,
           on_tick: Callable | None = None) -> Reduction:
    """`model` reduced into `out` (bisection, then node by node); Polygraphy's logs in `folder`/reduce-MODE.log."""
    start = time.monotonic()
    inputs = _freeze_inputs(feed_npz, folder / "freeze-inputs.json")
    check = [sys.executable, "-m", "converter.diagnose.check", str(probe_json.resolve()), str(wanted_json.resolve()),
             "polygraphy_debug.onnx"]
    current, builds = model.resolve(), 0
    for mode in MODES:
        log = folder / f"reduce-{mode}.log"
        run_module("converter.diagnose.reduce",
                   ["debug", "reduce", str(current), "-o", str(out.resolve()), "--mode", mode,
                    "--load-inputs", str(inputs.resolve()), "--check", *check],
                   folder, log, f"polygraphy debug reduce --mode {mode}", on_tick)
        builds += len(_ITERATION.findall(log.read_text(errors="replace")))
        current = out.resolve()
    return Reduction(_nodes(model), _nodes(out), builds, round(time.monotonic() - start, 1))


def _nodes(path: Path) -> int:
    return len(onnx.load(str(path), load_external_data=False).graph.node)


if __name__ == "__main__":
    from polygraphy.tools import main

    sys.exit(main())
