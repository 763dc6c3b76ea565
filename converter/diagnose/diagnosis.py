"""`rkconvert diagnose`: run the toolkit on what a build would hand it, classify how it fails, reduce
the graph to a small one that fails the same way, and look that up in the catalogue of known failures.

An accuracy failure is located with the per-layer report instead (locate.py): the build's own `rknn`
and `layers` stages, then `locate`. A quantized graph whose layers cannot all be dumped (built in parts, or
dumps of tens of GiB: SD 1.5 at 512 px) is located from the build's own stage sensitivity
(estimated_departure.py), and a graph too large to build whole is probed by the build's stages in parts.
The toolkit run and the reduction are build stages (`toolkit-probe`, `reduce`): diagnosing again with
another catalogue, or after a failed `--apply`, reuses them. The result lands in BUILD/diagnosis/
(written under a temporary name, renamed when complete): diagnosis.json, repro.onnx, repro.py (needs
rknn-toolkit2 alone), the repro's toolkit log and the reduction's log.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from calib_data.dataset_writer import read_samples
from converter.common.errors import BuildFailed
from converter.common.onnx_graph import Graph
from converter.pipeline.build import (convert, layer_rows, part_calibration, ranking_graph, sensitivity, split_model,
                                      toolkit_inputs)
from converter.pipeline.build_dir import BuildDir, StageResult, undone_on_bad_input
from converter.pipeline.outcome import Outcome
from converter.pipeline.plan import BuildPlan
from converter.pipeline.request import BuildRequest
from converter.pipeline.stage_run import StageRunner
from converter.pipeline.stages.calib import Calibration
from converter.pipeline.stages.passes import Rewritten
from converter.pipeline.stages.reference import Reference
from converter.pipeline.stages.rknn import Converted, part_log
from converter.pipeline.toolkit_inputs import ToolkitInputs
from converter.toolkit.child import log_lines
from converter.common.progress import Progress
from converter.diagnose import estimated_departure, locate, probe
from converter.toolkit import repro_script
from converter.toolkit.failure import KINDS, Failure, accuracy, classify, rules
from converter.diagnose import subgraph
from converter.diagnose.reduce import METHOD, reduce
from converter.diagnose.subgraph import Cutter
from converter.diagnose.tensor_store import TensorStore
from converter.reports.layer_report import estimated_dump_bytes
from converter.reports.report import write_html, write_json
from converter.toolkit import driver, known_failures

DIAGNOSIS_DIR = "diagnosis"
DIAGNOSIS_FILE = "diagnosis.json"
# No progress: the budget grows with the graph (a tiny UNet builds in seconds, SD 1.5's 3.4 GB in ~3 min).
BUDGET_BASE_S, BUDGET_PER_GB_S = 120.0, 120.0
TAIL_LINES = 12
NOT_REDUCED = {"refusal": "config() refuses before it reads the graph",
               "out_of_memory": "a smaller graph needs less memory, so it would not fail the same way",
               "accuracy": "no layer the simulator dumped maps to an ONNX tensor"}  # else located (locate.py)
ESTIMATED_NOT_GROWN = ("the departure is estimated, no layer dumped: no subgraph is grown around it (each candidate "
                       "would need ONNX Runtime on the whole graph for its inputs)")
REPRO, REPRO_LOG, REPRO_DATA, REPRO_DATASET = "repro.onnx", "repro-toolkit.log", "repro-data", "repro-dataset.txt"
REDUCE_LOG, VALUES = "reduce.log", "values"
# A candidate that ends in no progress takes the whole toolkit budget: room for about 40 of them.
REDUCE_BUDGETS = 40
DEPARTURE_FIELDS = ("index", "layer", "op", "onnx_tensor", "onnx_nodes", "module", "cosine", "golden_cosine",
                    "added_noise_db", "psnr_db")


def default_budget(onnx_bytes: int) -> float:
    return BUDGET_BASE_S + BUDGET_PER_GB_S * onnx_bytes / 1e9


def diagnose(req: BuildRequest, progress: Progress, budget_s: float | None = None,
             catalogue: Path = known_failures.CATALOGUE) -> dict:
    """Diagnose the build `req` describes; returns diagnosis.json's content."""
    known = known_failures.load(catalogue)
    with undone_on_bad_input(req.out):
        return _diagnosed(req, known, progress, budget_s, catalogue)


def _diagnosed(req: BuildRequest, known: list, progress: Progress, budget_s: float | None, catalogue: Path) -> dict:
    runner = StageRunner(BuildDir(req.out, req.rebuild), progress)
    plan, exported, passes, reference, calib = toolkit_inputs(req, None, runner, Outcome(req))
    budget = budget_s or default_budget(passes.onnx_bytes)
    gate = req.gates.min_psnr
    with tempfile.TemporaryDirectory(prefix="feeds-", dir=req.out) as feeds:
        settings = probe.Probe(plan.toolkit, budget, str(passes.onnx.resolve()),
                               _save_feeds(reference, calib, Path(feeds)), gate)
        probed = _probe_parts(plan, passes, reference, calib, runner) if plan.quantized and plan.parts > 1 \
            else _probe_whole(plan, settings, passes, reference, calib, runner)
        failure, rknn = probed.failure, probed.rknn
        reduced = departed = estimated = None
        skipped = failure and NOT_REDUCED.get(failure.kind)
        if failure and failure.kind == "accuracy":
            given = ToolkitInputs(passes, None, reference, calib)
            if plan.layer_dumps:
                rknn = convert(plan, given, True, runner)
                departed = locate.departure(layer_rows(passes, reference, rknn, runner), gate)
            elif plan.quantized:
                rknn = rknn or convert(plan, given, False, runner)
                measured = sensitivity(passes, ranking_graph(plan, exported, passes, runner), calib, reference,
                                       rknn, runner)
                estimated = estimated_departure.departure(measured, Graph.load(passes.onnx), gate,
                                                          rknn.accuracy(reference)["psnr_db"])
                skipped = ESTIMATED_NOT_GROWN
            else:
                dumps = estimated_dump_bytes(passes.onnx)
                skipped = f"locating it needs every layer dumped, ~{dumps / 2**30:.0f} GiB of text for this graph"
        elif failure and probed.record is None:
            skipped = skipped or (f"the graph is built in {plan.parts} parts: reduce the part that fails "
                                  f"({failure.describe()})")
        if departed:
            reduced = runner.run("locate", f"subgraph around layer {departed['layer']} that fails the gate alone",
                                 {"layer": departed["layer"], "nodes": departed["onnx_nodes"]}, [probed.record, rknn],
                                 lambda tmp: _locate(settings, failure, departed, tmp, progress))
        elif failure and not skipped:
            reduce_s = REDUCE_BUDGETS * budget
            reduced = runner.run("reduce", f"smallest subgraph that fails the same way: {failure.describe()}",
                                 {"budget_s": reduce_s}, [probed.record],
                                 lambda tmp: _reduce(settings, failure, reduce_s, tmp, progress))
    diagnosis = {"model": req.source.spec, "target": req.chip.name, "dtype": plan.dtype, "passes": list(plan.passes),
                 "parts": plan.parts, "toolkit_version": driver.toolkit_version(), "budget_s": round(budget),
                 "catalogue": str(catalogue), "status": "failed" if failure else "no failure",
                 "failure": _described(failure) if failure else None}

    if departed:
        diagnosis["departure"] = {**{k: departed.get(k) for k in DEPARTURE_FIELDS}, "cause": locate.cause(departed),
                                  "meaning": locate.CAUSES[locate.cause(departed)]}
    elif estimated:
        diagnosis["departure"] = estimated

    def fill(folder: Path) -> dict:
        if failure:
            diagnosis.update(_explain(failure, probed.logs, reduced, skipped, settings, known, folder))
        return diagnosis

    _write(req.out / DIAGNOSIS_DIR, fill)
    _link_from_report(req, failure, diagnosis.get("known"))
    return diagnosis


@dataclass(frozen=True)
class Probed:
    """How the toolkit did on the graph it would be handed."""
    failure: Failure | None
    logs: list[Path]  # its toolkit log (one per part)
    record: StageResult | None  # stage toolkit-probe; None when the build's own stage rknn was the probe
    rknn: Converted | None  # that stage's build, when it got that far


def _probe_whole(plan: BuildPlan, settings: probe.Probe, passes: Rewritten, reference: Reference,
                 calib: Calibration | None, runner: StageRunner) -> Probed:
    """Stage toolkit-probe: the graph whole, in the toolkit, under the budget and the gate."""
    key = {"target": plan.chip.name, "dtype": plan.dtype, "budget_s": settings.budget_s, "min_psnr": settings.min_psnr,
           **plan.toolkit.options}
    record = runner.run("toolkit-probe", f"{plan.dtype} build for {plan.chip.name}, budget {settings.budget_s:.0f} s",
                        key, [passes, reference] + ([calib] if calib else []), lambda tmp: _probe(settings, tmp))
    failure = record.meta["failure"] and Failure.from_json(record.meta["failure"])
    return Probed(failure, [record.path / record.meta["log"]], record, None)


def _probe_parts(plan: BuildPlan, passes: Rewritten, reference: Reference, calib: Calibration,
                 runner: StageRunner) -> Probed:
    """A quantized graph too large to build whole here (SD 1.5 as w8a8: ~6x its weights in the toolkit) is
    probed by the build's own stages, in parts: a diagnose after a failed build reuses them."""
    split = split_model(plan, passes, runner)
    given = ToolkitInputs(passes, split, reference, part_calibration(passes, split, calib, runner))
    logs = [part_log(runner.logs / "rknn.log", i, plan.parts) for i in range(1, plan.parts + 1)]
    try:
        rknn = convert(plan, given, False, runner)
    except BuildFailed as e:
        if e.ending is None:
            raise
        return Probed(classify(e.ending), [log for log in logs if log.exists()], None, None)
    psnr, gate = rknn.accuracy(reference)["psnr_db"], plan.request.gates.min_psnr
    failure = accuracy(psnr, gate, sum(rknn.phases.values())) if psnr < gate else None
    return Probed(failure, logs, None, rknn)


def _link_from_report(req: BuildRequest, failure: Failure | None, known: dict | None) -> None:
    """A failed build's report.json and report.html point at the diagnosis of its folder."""
    if not req.report_path.exists():
        return
    report = json.loads(req.report_path.read_text())
    if report.get("status") != "failed":
        return
    report["diagnosis"] = {"file": f"{DIAGNOSIS_DIR}/{DIAGNOSIS_FILE}", "failure": failure and failure.describe(),
                           "known": known and known["id"], "fix": known and known["remedy_text"]}
    write_json(req.report_path, report)
    write_html(req.html_path, report)


def _write(final: Path, fill) -> None:
    """The diagnosis folder, written under a temporary name and renamed when complete."""
    work = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        write_json(work / DIAGNOSIS_FILE, fill(work))
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _save_feeds(reference: Reference, calib: Calibration | None, folder: Path) -> list[str]:
    """The check input, then each calibration sample, as .npz of the graph's inputs."""
    feeds = [reference.feed(0)] + (read_samples(calib.path)[0] if calib else [])
    paths = []
    for i, feed in enumerate(feeds):
        paths.append(str((folder / f"{i}.npz").resolve()))
        np.savez(paths[-1], **feed)
    return paths


def _probe(settings: probe.Probe, tmp: Path) -> dict:
    failure = probe.run(Path(settings.source), settings, tmp / "run")
    shutil.copyfile(tmp / "run" / "toolkit.log", tmp / "toolkit.log")
    shutil.rmtree(tmp / "run")
    return {"failure": failure.to_json() if failure else None, "log": "toolkit.log"}


def _reduce(settings: probe.Probe, failure: Failure, budget_s: float, tmp: Path, progress: Progress) -> dict:
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

        reduction = reduce(len(cutter), fails, budget_s, progress.note)
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


def _locate(settings: probe.Probe, failure: Failure, departed: dict, tmp: Path, progress: Progress) -> dict:
    """The departing layer's ONNX nodes, grown downstream until they fail the gate alone, into `tmp`/repro.onnx."""
    store = TensorStore(Path(settings.source), settings.feeds, tmp / VALUES)

    def fails(candidate: Path) -> bool:
        seen = probe.run(candidate, settings, _emptied(tmp / "candidate-run"), store)
        return seen is not None and seen.same_way(failure)

    found = locate.grow(Cutter(Path(settings.source), store), departed["onnx_nodes"], fails, tmp / REPRO,
                        progress.note)
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


def _explain(failure: Failure, logs: list[Path], reduced: StageResult | None, skipped: str | None,
             settings: probe.Probe, known: list, folder: Path) -> dict:
    """Copy the repro into `folder`, match it against the catalogue, write repro.py."""
    if reduced is None:
        onnx.save(_any_graph(), str(folder / REPRO))
        (folder / REPRO_LOG).write_text("".join(log.read_text(errors="replace") for log in logs))
        repro_failure, reduction, feeds = failure, {"skipped": skipped}, []
    else:
        for name in (REPRO, REPRO_LOG, REDUCE_LOG):
            if (reduced.path / name).exists():
                shutil.copyfile(reduced.path / name, folder / name)
        repro_failure = Failure.from_json(reduced.meta["failure"])
        reduction = {k: v for k, v in reduced.meta.items() if k != "failure"}
        feeds = sorted((reduced.path / REPRO_DATA).glob("*.npz"), key=lambda p: int(p.stem))
    ops = [n.op_type for n in onnx.load(str(folder / REPRO), load_external_data=False).graph.node]
    log_text = (folder / REPRO_LOG).read_text(errors="replace")
    seen = known_failures.Seen(repro_failure.kind, repro_failure.phase, repro_failure.detail, settings.target,
                               driver.toolkit_version(), rules(log_text), ops)
    entry = known_failures.match(seen, known)
    dataset = settings.toolkit.quantized and bool(feeds)
    if feeds:
        _repro_inputs(feeds, folder, dataset)
    repro_script.write(folder, repro_failure, entry.title if entry else f"Unknown failure: {failure.describe()}",
                       settings.source, reduction.get("nodes_before", 0), len(ops),
                       settings.toolkit.job(Path(REPRO), [], [], Path(REPRO_DATASET) if dataset else None))
    return {"reduction": reduction,
            "repro": {"onnx": REPRO, "script": "repro.py", "command": f"cd {folder.with_name(DIAGNOSIS_DIR)} && "
                      "python repro.py", "ops": dict(Counter(ops)), "failure": _described(repro_failure),
                      "rules": seen.rules[-5:], "log_tail": _tail(log_text)},
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


def _described(failure: Failure) -> dict:
    return {**failure.to_json(), "meaning": KINDS[failure.kind]}


def _tail(log_text: str) -> list[str]:
    return [line for line in log_lines(log_text) if not line.startswith("@@rkconvert")][-TAIL_LINES:]


def _any_graph() -> onnx.ModelProto:
    """A one-node graph: what config() refuses does not depend on the graph."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "repro", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
