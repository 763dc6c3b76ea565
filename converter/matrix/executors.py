"""Where a matrix's builds run.

`local`: here, one at a time (nothing to start). `ray`: each build a Ray task on a running cluster,
asking for its estimated memory (memory_estimate.py) so a full-size build only lands on a node where
it fits; build folders go to the shared --out (a path every node sees). A task whose build process
was killed from outside (out of memory, a node lost) runs once more, wherever Ray places it; killed
twice, its row says so and it is never counted as built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from converter.common import ray_cluster
from converter.matrix.entry_run import EntryResult, run_entry
from converter.matrix.memory_estimate import peak_bytes
from converter.matrix.spec import Entry


def run_local(entries: list[Entry], workdir: Path, out: Path,
              on_start: Callable[[Entry], None]) -> Iterator[EntryResult]:
    for entry in entries:
        on_start(entry)
        yield run_entry(entry, workdir, out)


class BuildKilled(Exception):
    """The build's process ended by a signal it did not send itself: Ray runs the task once more."""


def build_on_node(name: str, options: dict, workdir: str, out: str) -> dict:
    """A Ray task's body (module level, so every node imports it from the installed rkconvert)."""
    outcome = run_entry(Entry(name, options), Path(workdir), Path(out))
    if outcome.status == "killed":
        raise BuildKilled(outcome.error)
    return outcome.to_json()


def run_ray(entries: list[Entry], workdir: Path, out: Path, address: str,
            on_start: Callable[[Entry], None]) -> Iterator[EntryResult]:
    """Outcomes as builds finish (not in entry order)."""
    with ray_cluster.joined(address) as ray:
        task = ray.remote(max_retries=1, retry_exceptions=[BuildKilled])(build_on_node)
        pending = {}
        for entry in entries:
            on_start(entry)
            ref = task.options(num_cpus=1, memory=peak_bytes(entry.options, workdir)).remote(
                entry.name, entry.options, str(workdir), str(out))
            pending[ref] = entry
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            entry = pending.pop(ref)
            try:
                yield EntryResult.from_json(ray.get(ref))
            except ray.exceptions.RayError as e:  # killed twice, or its worker lost twice
                cause = str(e).strip().splitlines()[-1]
                yield EntryResult(entry.name, "killed", -1, 0.0, f"killed on both tries ({cause})", None)
