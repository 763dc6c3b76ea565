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

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from calib_data.dataset_writer import read_samples
from converter.common.errors import BuildFailed
from converter.common.onnx_graph import Graph
from converter.builds.builder import ranking_graph, toolkit_inputs
from converter.builds.build_dir import BuildDir, StageResult, undone_on_bad_input
from converter.builds.plan import BuildPlan
from converter.builds.request import BuildRequest
from converter.builds.stage_run import StageRunner
from converter.builds.stages import layers as layers_stage
from converter.builds.stages import rknn as rknn_stage
from converter.builds.stages import sensitivity as sensitivity_stage
from converter.builds.stages import split as split_stage
from converter.builds.stages import split_calib as split_calib_stage
from converter.builds.stages.calib import Calibration
from converter.builds.stages.passes import Rewritten
from converter.builds.stages.reference import Reference
from converter.builds.stages.rknn import Converted, part_log
from converter.builds.toolkit_inputs import ToolkitInputs
from converter.common.progress import Progress
from converter.diagnose import estimated_departure, failing_graph, locate, probe
from converter.diagnose.failing_graph import (DIAGNOSIS_FILE, REDUCE_BUDGETS, described, explain, locate_into,
                                              reduce_into, write_folder)
from converter.reports.build_report import load_build
from converter.reports.layer_report import estimated_dump_bytes
from converter.toolkit import driver, known_failures
from converter.toolkit.failure import Failure, accuracy, classify

DIAGNOSIS_DIR = "diagnosis"
# No progress: the budget grows with the graph (a tiny UNet builds in seconds, SD 1.5's 3.4 GB in ~3 min).
BUDGET_BASE_S, BUDGET_PER_GB_S = 120.0, 120.0
# An accuracy failure is located (locate.py) unless no dumped layer maps to an ONNX tensor.
NOT_REDUCED = {**failing_graph.NOT_REDUCED, "accuracy": "no layer the simulator dumped maps to an ONNX tensor"}
ESTIMATED_NOT_GROWN = ("the departure is estimated, no layer dumped: no subgraph is grown around it (each candidate "
                       "would need ONNX Runtime on the whole graph for its inputs)")
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
    plan, exported, passes, reference, calib = toolkit_inputs(req, None, runner)
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
                rknn = rknn_stage.stage(runner, given, plan.toolkit, True, req.parts_in_turn)
                departed = locate.departure(layers_stage.stage(runner, passes, reference, rknn), gate)
            elif plan.quantized:
                rknn = rknn or rknn_stage.stage(runner, given, plan.toolkit, False, req.parts_in_turn)
                measured = sensitivity_stage.stage(runner, passes, ranking_graph(plan, exported, passes, runner), calib,
                                                   reference, rknn)
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
                                 lambda tmp: locate_into(settings, failure, departed, tmp, progress.note))
        elif failure and not skipped:
            reduce_s = REDUCE_BUDGETS * budget
            reduced = runner.run("reduce", f"smallest subgraph that fails the same way: {failure.describe()}",
                                 {"budget_s": reduce_s}, [probed.record],
                                 lambda tmp: reduce_into(settings, failure, reduce_s, tmp, progress.note))
    diagnosis = {"model": req.source.spec, "target": req.chip.name, "dtype": plan.dtype, "passes": list(plan.passes),
                 "parts": plan.parts, "toolkit_version": driver.toolkit_version(), "budget_s": round(budget),
                 "catalogue": str(catalogue), "status": "failed" if failure else "no failure",
                 "failure": described(failure) if failure else None}

    if departed:
        diagnosis["departure"] = {**{k: departed.get(k) for k in DEPARTURE_FIELDS}, "cause": locate.cause(departed),
                                  "meaning": locate.CAUSES[locate.cause(departed)]}
    elif estimated:
        diagnosis["departure"] = estimated

    def fill(folder: Path) -> dict:
        if failure:
            diagnosis.update(explain(failure, probed.logs, reduced and reduced.path,
                                     reduced.meta if reduced else {"skipped": skipped}, settings, known, folder,
                                     req.out / DIAGNOSIS_DIR))
        return diagnosis

    write_folder(req.out / DIAGNOSIS_DIR, fill)
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
    key = plan.toolkit.key(budget_s=settings.budget_s, min_psnr=settings.min_psnr)
    record = runner.run("toolkit-probe", f"{plan.dtype} build for {plan.chip.name}, budget {settings.budget_s:.0f} s",
                        key, [passes, reference] + ([calib] if calib else []), lambda tmp: _probe(settings, tmp))
    failure = record.meta["failure"] and Failure.from_json(record.meta["failure"])
    return Probed(failure, [record.path / record.meta["log"]], record, None)


def _probe_parts(plan: BuildPlan, passes: Rewritten, reference: Reference, calib: Calibration,
                 runner: StageRunner) -> Probed:
    """A quantized graph too large to build whole here (SD 1.5 as w8a8: ~6x its weights in the toolkit) is
    probed by the build's own stages, in parts: a diagnose after a failed build reuses them."""
    split = split_stage.stage(runner, passes, plan.parts)
    given = ToolkitInputs(passes, split, reference, split_calib_stage.stage(runner, passes, split, calib))
    logs = [part_log(runner.logs / "rknn.log", i, plan.parts) for i in range(1, plan.parts + 1)]
    try:
        rknn = rknn_stage.stage(runner, given, plan.toolkit, False, plan.request.parts_in_turn)
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
    report = load_build(req.report_path)
    if report.ok:
        return
    replace(report, diagnosis={"file": f"{DIAGNOSIS_DIR}/{DIAGNOSIS_FILE}", "failure": failure and failure.describe(),
                               "known": known and known["id"], "fix": known and known["remedy_text"]}
            ).written(req.report_path, req.html_path)


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


