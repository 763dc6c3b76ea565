"""`rkconvert matrix`: every entry of a MATRIX.toml built as an ordinary `build`, then one summary.

A failed entry (toolkit crash, refusal, accuracy gate, bad input of its own) is a row of the summary;
the others go on. Only a matrix file that cannot be read stops everything.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from rich.console import Console

from converter.common import ray_cluster
from converter.common.errors import UserError
from converter.matrix import spec, summary
from converter.matrix.entry_run import EntryResult
from converter.matrix.executors import run_local, run_ray

MARKS = {"ok": "✓", "failed": "✗", "bad input": "✗", "killed": "✗"}


def default_out(matrix: Path) -> Path:
    return Path("build") / f"matrix-{matrix.stem}"


def run_matrix(matrix: Path, out: Path | None, known: dict[str, str], problem: Callable[[list[str]], str | None],
               console: Console, ray_address: str | None = None) -> list[dict]:
    """Build every entry (here, or on the Ray cluster at `ray_address`); write summary.json /
    summary.html into `out`; the summary rows, in the file's order. Before the first build, every entry
    is checked as its build would check it (`problem`: what keeps `rkconvert build ARGUMENTS` from
    starting, or None), and all that is wrong is refused at once."""
    if not matrix.is_file():
        raise UserError(f"{matrix}: no such matrix file")
    entries = spec.load(matrix, known)
    with contextlib.chdir(matrix.parent.resolve()):  # where the builds run: relative paths start there
        problems = [f"{entry.name}: {found}" for entry in entries if (found := problem(entry.arguments()))]
    if problems:
        error = UserError(f"{matrix}: {len(problems)} of {len(entries)} entries cannot be built (nothing was built)")
        error.details = tuple(problems)
        raise error
    if ray_address:
        ray_cluster.check_reachable(ray_address)  # before anything is written
    out = (out or default_out(matrix)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    where = f"as Ray tasks on {ray_address}" if ray_address else "one at a time, here"
    console.print(f"{len(entries)} builds from {matrix} into {out} ({where})", highlight=False)
    def on_start(entry: spec.Entry) -> None:
        console.print(f"[{entries.index(entry) + 1}/{len(entries)}] {entry.name}: rkconvert build "
                      f"{' '.join(entry.arguments())}", highlight=False, markup=False)

    outcomes: list[EntryResult] = []
    run = run_ray(entries, matrix.parent.resolve(), out, ray_address, on_start) if ray_address else \
        run_local(entries, matrix.parent.resolve(), out, on_start)
    for outcome in run:
        outcomes.append(outcome)
        detail = f": {outcome.error}" if outcome.error else ""
        console.print(f"{MARKS[outcome.status]} {outcome.name} {outcome.status} ({outcome.seconds:.0f} s){detail}",
                      highlight=False, markup=False)
    order = [e.name for e in entries]
    rows = [summary.row(o) for o in sorted(outcomes, key=lambda o: order.index(o.name))]
    summary.write(out, matrix, rows, f"ray {ray_address}" if ray_address else "local")
    summary.print_summary(console, rows)
    console.print(f"summary: {out / summary.SUMMARY_JSON} and {summary.SUMMARY_HTML}", highlight=False)
    return rows
