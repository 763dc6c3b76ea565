"""What diagnose does with a graph the toolkit fails on: cut it down to a repro that fails the same way, build
that once more, match it against the catalogue of known failures and write repro.py, into a folder written
whole or not at all. For a build's graph (diagnosis.py, after its stages) and for any graph with its own
probe settings (the fuzzer's).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from converter.diagnose import locate, probe, subgraph
from converter.diagnose.reduce import METHOD, reduce
from converter.diagnose.subgraph import Cutter
from converter.diagnose.tensor_store import TensorStore
from converter.common.json_files import write_json
from converter.toolkit import driver, known_failures, repro_script
from converter.toolkit.child import log_lines
from converter.toolkit.failure import KINDS, Failure, rules

DIAGNOSIS_FILE = "diagnosis.json"
TAIL_LINES = 12
REPRO, REPRO_LOG, REPRO_DATA, REPRO_DATASET = "repro.onnx", "repro-toolkit.log", "repro-data", "repro-dataset.txt"
REDUCE_LOG, VALUES = "reduce.log", "values"
# A candidate that ends in no progress takes the whole toolkit budget: room for about 40 of them.
REDUCE_BUDGETS = 40
# What a smaller graph cannot show: these are not reduced.
NOT_REDUCED = {"refusal": "config() refuses before it reads the graph",
               "out_of_memory": "a smaller graph needs less memory, so it would not fail the same way"}


def reduce_into(settings: probe.Probe, failure: Failure, budget_s: float, tmp: Path,
                note: Callable[[str], None] | None = None) -> dict:
    """The reduction (reduce.py) into `tmp`/repro.onnx (crash, abort, error, no progress); every candidate a
    line of `tmp`/reduce.log."""
    store = TensorStore(Path(settings.source), settings.feeds, tmp / VALUES)
    cutter = Cutter(Path(settings.source), store)
    with open(tmp / REDUCE_LOG, "w") as log:
        def fails(kept: frozenset[int]) -> bool:
            try:
                model = cutter.cut(kept)
                if model is None:
                    seen = "hands nothing on"
                    return False
                candidate = subgraph.save(model, _emptied(tmp / "candidate") / "candidate.onnx")
                run = probe.run(candidate, settings, _emptied(tmp / "candidate-run"), store)
                seen = run.describe() if run else "built"
                return run is not None and run.same_way(failure)
            except Exception as e:
                seen = f"error of the check: {type(e).__name__}: {e}".splitlines()[0]
                raise
            finally:
                log.write(f"{len(kept)} nodes ({_span(kept)}): {seen}\n")
                log.flush()

        reduction = reduce(len(cutter), fails, budget_s, note)
    subgraph.save(cutter.cut(reduction.kept), tmp / REPRO)
    return {"method": METHOD, "nodes_before": reduction.nodes_before, "nodes_after": len(reduction.kept),
            "builds": reduction.builds, "minutes": round(reduction.seconds / 60, 2),
            "phases": [asdict(p) for p in reduction.phases], "stopped": reduction.stopped,
            "candidate_errors": reduction.errors, "first_candidate_error": reduction.first_error,
            **_settle(settings, failure, store, tmp)}


def _emptied(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _span(kept: frozenset[int]) -> str:
    """`kept` as runs of consecutive node indices: "#4-#7, #9"."""
    runs: list[list[int]] = []
    for i in sorted(kept):
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"#{r[0]}-#{r[-1]}" if len(r) > 1 else f"#{r[0]}" for r in runs)


def locate_into(settings: probe.Probe, failure: Failure, departed: dict, tmp: Path,
                note: Callable[[str], None] | None = None) -> dict:
    """The departing layer's ONNX nodes, grown downstream until they fail the gate alone, into `tmp`/repro.onnx."""
    store = TensorStore(Path(settings.source), settings.feeds, tmp / VALUES)

    def fails(candidate: Path) -> bool:
        seen = probe.run(candidate, settings, _emptied(tmp / "candidate-run"), store)
        return seen is not None and seen.same_way(failure)

    found = locate.grow(Cutter(Path(settings.source), store), departed["onnx_nodes"], fails, tmp / REPRO, note)
    return {"method": f"layer {departed['layer']}'s ONNX nodes and {found.rings} rings of their consumers",
            "nodes_before": found.nodes_before, "nodes_after": found.nodes_after, "builds": found.builds,
            "minutes": round(found.seconds / 60, 2), **_settle(settings, failure, store, tmp)}


def _settle(settings: probe.Probe, failure: Failure, store: TensorStore, tmp: Path) -> dict:
    """The repro in `tmp` built once more for its log and failure, and its inputs saved for repro.py
    (calibration samples for a quantized build, the check input)."""
    again = probe.run(tmp / REPRO, settings, tmp / "repro-build", store)
    shutil.copyfile(tmp / "repro-build" / "toolkit.log", tmp / REPRO_LOG)
    model = onnx.load(str(tmp / REPRO), load_external_data=False)
    (tmp / REPRO_DATA).mkdir()
    for i, feed in enumerate(probe.feeds_for(model, store)):
        np.savez(tmp / REPRO_DATA / f"{i}.npz", **feed)
    for scratch in ("repro-build", VALUES, "candidate", "candidate-run"):
        shutil.rmtree(tmp / scratch, ignore_errors=True)
    return {"failure": (again or failure).to_json(), "reproduced": again is not None and again.same_way(failure)}


def explain(failure: Failure, logs: list[Path], reduced: Path | None, reduction: dict, settings: probe.Probe,
            known: list, folder: Path, final: Path) -> dict:
    """Copy the repro made in `reduced` (reduce_into or locate_into: `reduction` is what they returned; None:
    not reduced, `reduction` says why) into `folder`, which becomes `final`, match it against the catalogue,
    write repro.py."""
    if reduced is None:
        onnx.save(_any_graph(), str(folder / REPRO))
        (folder / REPRO_LOG).write_text("".join(log.read_text(errors="replace") for log in logs))
        repro_failure, feeds = failure, []
    else:
        for name in (REPRO, REPRO_LOG, REDUCE_LOG):
            if (reduced / name).exists():
                shutil.copyfile(reduced / name, folder / name)
        repro_failure = Failure.from_json(reduction["failure"])
        reduction = {k: v for k, v in reduction.items() if k != "failure"}
        feeds = sorted((reduced / REPRO_DATA).glob("*.npz"), key=lambda p: int(p.stem))
    ops = [n.op_type for n in onnx.load(str(folder / REPRO), load_external_data=False).graph.node]
    log_text = (folder / REPRO_LOG).read_text(errors="replace")
    seen = known_failures.Seen(repro_failure.kind, repro_failure.phase, repro_failure.detail, settings.target,
                               driver.toolkit_version(), rules(log_text), ops, settings.toolkit.dtype)
    entry = known_failures.match(seen, known)
    dataset = settings.toolkit.quantized and bool(feeds)
    if feeds:
        _repro_inputs(feeds, folder, dataset)
    repro_script.write(folder, repro_failure, entry.title if entry else f"Unknown failure: {failure.describe()}",
                       settings.source, reduction.get("nodes_before", 0), len(ops),
                       settings.toolkit.job(Path(REPRO), [], [], Path(REPRO_DATASET) if dataset else None))
    return {"reduction": reduction,
            "repro": {"onnx": REPRO, "script": "repro.py", "command": f"cd {final} && python repro.py",
                      "ops": dict(Counter(ops)), "failure": described(repro_failure), "rules": seen.rules[-5:],
                      "log_tail": _tail(log_text)},
            "known": None if entry is None else {"id": entry.id, "title": entry.title, "remedy": entry.remedy,
                                                 "remedy_text": entry.remedy_text(), "why": entry.why}}


def _repro_inputs(feeds: list[Path], folder: Path, dataset: bool) -> None:
    """repro-input.npz (the check input), and for a quantized build repro-dataset.txt: the toolkit's
    dataset file over .npy files of the calibration samples."""
    shutil.copyfile(feeds[0], folder / "repro-input.npz")
    if not dataset:
        return
    (folder / REPRO_DATA).mkdir()
    lines = []
    for i, path in enumerate(feeds[1:] or feeds):
        with np.load(path) as data:
            files = []
            for j, name in enumerate(data.files):
                files.append(f"{REPRO_DATA}/{i}-{j}.npy")
                np.save(folder / files[-1], data[name])
        lines.append(" ".join(files))
    (folder / REPRO_DATASET).write_text("\n".join(lines) + "\n")


def described(failure: Failure) -> dict:
    return {**failure.to_json(), "meaning": KINDS[failure.kind]}


def _tail(log_text: str) -> list[str]:
    return [line for line in log_lines(log_text) if not line.startswith("@@rkconvert")][-TAIL_LINES:]


def _any_graph() -> onnx.ModelProto:
    """A one-node graph: what config() refuses does not depend on the graph."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "repro", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_folder(final: Path, fill) -> None:
    """The diagnosis folder: `fill(folder)` writes into it and returns diagnosis.json's content; written
    under a temporary name and renamed when complete."""
    work = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        write_json(work / DIAGNOSIS_FILE, fill(work))
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def diagnose_graph(settings: probe.Probe, failure: Failure, logs: list[Path], folder: Path,
                   catalogue: Path = known_failures.CATALOGUE, note: Callable[[str], None] | None = None) -> dict:
    """A graph (`settings.source`) that fails as `failure` (its toolkit `logs`) when built as `settings` says,
    reduced, matched and written into `folder` (made whole or not at all): diagnosis.json's content.
    Accuracy too is reduced here, each candidate a build and a simulator run: for small graphs (a build's
    graph is located instead: diagnosis.py)."""
    known = known_failures.load(catalogue)
    scratch = folder.with_name(f".{folder.name}.reduce-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        skipped = NOT_REDUCED.get(failure.kind)
        reduction = {"skipped": skipped} if skipped else \
            reduce_into(settings, failure, REDUCE_BUDGETS * settings.budget_s, scratch, note)
        diagnosis = {"model": settings.source, "target": settings.target, "dtype": settings.toolkit.dtype,
                     "toolkit_version": driver.toolkit_version(), "budget_s": round(settings.budget_s),
                     "catalogue": str(catalogue), "status": "failed", "failure": described(failure)}

        def fill(work: Path) -> dict:
            diagnosis.update(explain(failure, logs, None if skipped else scratch,
                                     reduction, settings, known, work, folder))
            return diagnosis

        write_folder(folder, fill)
        return diagnosis
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
