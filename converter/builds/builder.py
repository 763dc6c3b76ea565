"""`rkconvert build`: model -> ONNX -> graph passes -> ONNX Runtime reference -> .rknn -> layers -> (a model
that draws: its text encoder and VAE decoder, each a build of its own -> images) -> report.

Each stage (converter/builds/stages/) runs through the build folder, reused when its inputs are
unchanged. The toolkit runs in a child process; ONNX Runtime runs here, before it, and memory is handed
back between stages, so the two never hold a large model at the same time. The choices the request
leaves open are settled once, in a plan (plan.py), after the stages that show the model.
"""

from __future__ import annotations

import os
import resource
import shutil
from dataclasses import replace
from pathlib import Path

from calib_data.schedules import get_schedule
from converter.builds import hybrid, npu_models, plan as planning
from converter.builds.build_dir import BuildDir, undone_on_bad_input
from converter.builds.finished import FinishedBuild
from converter.builds.npu_models import NpuModel
from converter.builds.outcome import IMAGES_DIR, Delivery, Outcome
from converter.builds.plan import BuildPlan
from converter.builds.request import BuildRequest
from converter.builds.simulator import BuiltModel, PipelineModels
from converter.builds.stage_run import StageRunner
from converter.builds.stages import calib as calib_stage
from converter.builds.stages import export as export_stage
from converter.builds.stages import images as images_stage
from converter.builds.stages import layers as layers_stage
from converter.builds.stages import passes as passes_stage
from converter.builds.stages import pipeline_models as traced_stage
from converter.builds.stages import reference as reference_stage
from converter.builds.stages import rknn as rknn_stage
from converter.builds.stages import sensitivity as sensitivity_stage
from converter.builds.stages import split as split_stage
from converter.builds.stages import split_calib as split_calib_stage
from converter.builds.stages.calib import Calibration
from converter.builds.stages.export import Exported
from converter.builds.stages.passes import Rewritten
from converter.builds.stages.pipeline_models import Traced
from converter.builds.stages.reference import Reference
from converter.builds.stages.rknn import Converted
from converter.builds.toolkit_inputs import ToolkitInputs
from converter.common.digest import file_chunks, sha256
from converter.common.errors import BuildFailed, UserError
from converter.common.progress import Progress
from converter.imaging.evaluation import EvalSet
from converter.models.family import PIPELINE_MODELS
from converter.reports.build_report import BuildReport
from converter.reports.layer_report import first_below
from converter.reports.report import print_images, print_layers


# A pipeline model's build whose gates passed: delivered (status ok) once the build it belongs to has passed.
PASSED = "passed"


def build(req: BuildRequest, progress: Progress) -> BuildReport:
    """Run every stage; write the artifact, report.json and report.html. Raises UserError / BuildFailed.

    Bad input (UserError) leaves nothing behind that this run created; a failed build leaves its
    completed stages (for reuse and diagnosis) and reports with status "failed", never a .rknn. The
    artifacts (the UNet's and its pipeline models') are placed once the whole build has passed.
    """
    return _build(req, progress, deliver=True)[1]


def _build(req: BuildRequest, progress: Progress, deliver: bool) -> tuple[Outcome, BuildReport]:
    """The build and the report it wrote; without `deliver`, a build that passes writes its report with
    status PASSED and places nothing (_finish places it)."""
    evaluation = planning.check(req)
    with undone_on_bad_input(req.out):
        req.out.mkdir(parents=True, exist_ok=True)
        for stale in (req.artifact, *req.out.glob(f"{req.artifact.stem}.part*.rknn"), req.report_path,
                      req.html_path):
            stale.unlink(missing_ok=True)
        runner = StageRunner(BuildDir(req.out, req.rebuild), progress)
        outcome = Outcome(req, stages=runner.ran)
        status = "failed"
        try:
            _run_stages(req, evaluation, runner, outcome)
            if deliver:
                _finish(outcome)
            status = "ok" if deliver else PASSED
        except BuildFailed as e:
            outcome.error = str(e)
            raise
        finally:
            report = outcome.report(status)
            if req.out.exists():
                report.written(req.report_path, req.html_path)
    return outcome, report


def _finish(outcome: Outcome) -> None:
    """Place what a build that passed delivers: its pipeline models' .rknn (each build's report then says
    ok), then its own .rknn and host programs."""
    for name, model in (outcome.passed_models or {}).items():
        model.delivery = _deliver(model.plan, model.rewritten, model.final)
        report = model.report("ok")
        report.written(model.request.report_path, model.request.html_path)
        outcome.npu_models = [replace(m, built=FinishedBuild(m.built.folder, report)) if m.name == name else m
                              for m in outcome.npu_models]
    outcome.delivery = _deliver(outcome.plan, outcome.rewritten, outcome.final)


def prepare(req: BuildRequest, evaluation: EvalSet | None, runner: StageRunner,
            outcome: Outcome | None = None) -> tuple[BuildPlan, Exported, Rewritten]:
    """Stages `export` and `passes`, and the plan they settle: --dtype auto reads the exported weights (a
    W8A16 checkpoint?), the pass list follows the dtype, --parts auto the rewritten graph's weight."""
    outcome = outcome or Outcome(req)
    outcome.exported = exported = export_stage.stage(runner, req.source, req.resolution)
    chosen = planning.dtype(req, exported)
    if chosen[1]:
        runner.progress.note(f"--dtype auto: {chosen[0]} ({chosen[1]})")
    names = planning.pass_names(req, chosen[0])
    outcome.rewritten = rewritten = passes_stage.stage(runner, exported, names, req.chip, req.passes.attention_tiles)
    outcome.plan = plan = planning.settle(req, evaluation, chosen, names, exported.graph, rewritten)
    if plan.parts_choice:
        runner.progress.note(f"--parts auto: {plan.parts} ({plan.parts_choice})")
    return plan, exported, rewritten


def calibrate(req: BuildRequest, progress: Progress) -> Calibration:
    """`rkconvert calib`: the build's stages up to the graph the toolkit gets, and the calibration set
    recorded on it as --samples / --schedule ask (whatever the dtype)."""
    with undone_on_bad_input(req.out):
        runner = StageRunner(BuildDir(req.out, req.rebuild), progress)
        _, exported, rewritten = prepare(req, None, runner)
        return calib_stage.stage(runner, req.source, req.calib, req.seed, exported, rewritten)


def toolkit_inputs(req: BuildRequest, evaluation: EvalSet | None, runner: StageRunner, outcome: Outcome | None = None
                   ) -> tuple[BuildPlan, Exported, Rewritten, Reference, Calibration | None]:
    """Stages export, passes, (checkset,) reference and (quantized builds) calib: everything the toolkit is
    handed but the graph's parts, and the plan (a build's `outcome` keeps them as they come, for a report of
    a build that fails on the way)."""
    outcome = outcome or Outcome(req)
    plan, exported, rewritten = prepare(req, evaluation, runner, outcome)
    checkset = None
    if plan.check_inputs == "trajectories":  # held out: other prompts and noise than the calibration's
        samples = req.checks.samples
        checkset = calib_stage.stage(runner, req.source, replace(req.calib, samples=samples, trajectories=samples),
                                     req.seed + 1, exported, rewritten, "checkset")
    guidance = get_schedule(req.calib.schedule).embedding_guidance
    outcome.reference = reference = reference_stage.stage(runner, exported, rewritten, checkset, req.checks.samples,
                                                          req.seed, guidance)
    outcome.calibration = calib = calib_stage.stage(runner, req.source, plan.calibration, req.seed, exported,
                                                    rewritten) if plan.quantized else None
    return plan, exported, rewritten, reference, calib


def _run_stages(req: BuildRequest, evaluation: EvalSet | None, runner: StageRunner, outcome: Outcome) -> None:
    plan, exported, rewritten, reference, calib = toolkit_inputs(req, evaluation, runner, outcome)
    split = split_stage.stage(runner, rewritten, plan.parts)
    # what each toolkit build calibrates on
    given = ToolkitInputs(rewritten, split, reference, split_calib_stage.stage(runner, rewritten, split, calib))
    outcome.plain = rknn = rknn_stage.stage(runner, given, plan.toolkit, plan.layer_dumps, req.parts_in_turn)
    outcome.accuracy = rknn.accuracy(reference)
    if plan.layer_dumps:
        outcome.layers = layers_stage.stage(runner, rewritten, reference, rknn)
        print_layers(runner.progress.console, outcome.layers)
    # (the toolkit's own mixed precision, --toolkit-auto-hybrid, is a baseline: no search after it)
    searching = plan.quantized and req.hybrid.enabled and not plan.toolkit.auto_hybrid
    if searching and outcome.accuracy["psnr_db"] < req.gates.min_psnr:
        ranked_on = ranking_graph(plan, exported, rewritten, runner)
        outcome.sensitivity = measured = sensitivity_stage.stage(runner, rewritten, ranked_on, calib, reference, rknn)
        outcome.hybrid = found = hybrid.search(plan, given, measured, rknn, outcome.accuracy["psnr_db"], runner)
        if found.found is None:
            raise BuildFailed(found.shortfall(req.gates.min_psnr, req.hybrid.builds))
        rknn = found.found.converted
        outcome.accuracy = rknn.accuracy(reference)
    outcome.rknn_files = rknn.file_facts()
    outcome.final = rknn
    models = PipelineModels(BuiltModel(rewritten, reference, given.jobs(plan.toolkit, rknn.float16_layers,
                                                                         rknn.step1), rknn.simulator[0][0]))
    if req.source.pipeline:
        outcome.npu_models, outcome.passed_models = build_npu_models(
            req, traced_stage.stage(runner, req.source, exported.resolution), runner.progress)
        models = replace(models, **{m.name: m.built.model() for m in outcome.npu_models if m.built})
    shutil.rmtree(req.out / IMAGES_DIR, ignore_errors=True)
    if plan.evaluation is not None:
        made_by = [*given.stages, rknn, *(m.built.rknn for m in outcome.npu_models or () if m.built)]
        outcome.images = images = images_stage.stage(runner, req.source.pipeline, plan.evaluation, exported, models,
                                                     made_by, plan.toolkit)
        # Placed before the gates: a build that fails on its images shows them.
        for png in images.pngs:
            _place(png, req.out / IMAGES_DIR / png.name)
        print_images(runner.progress.console, images.figures)
    outcome.peak_rss_bytes = {"rkconvert": _self_peak_rss(), "toolkit": rknn.peak_rss_bytes}
    _gate(req, outcome.accuracy, outcome.layers, images.figures if outcome.images else None)


def ranking_graph(plan: BuildPlan, exported: Exported, rewritten: Rewritten, runner: StageRunner) -> Rewritten:
    """The graph stage `sensitivity` ranks on: the build's, or (stages `proxy-export`, `proxy-passes`) the
    same passes on the model exported at --hybrid-rank-resolution when the build's resolution is larger
    (an ONNX source has fixed shapes: ranked on them)."""
    req = plan.request
    proxy = req.hybrid.rank_resolution
    if exported.resolution <= proxy or req.source.kind == "onnx":
        return rewritten
    try:
        smaller = export_stage.stage(runner, req.source, proxy, "proxy-export")
    except UserError as e:  # not bad input of this run's making: the stages so far stay
        raise BuildFailed(f"--hybrid-rank-resolution {proxy}: {e}") from None
    return passes_stage.stage(runner, smaller, list(plan.passes), req.chip, req.passes.attention_tiles, "proxy-passes")


def build_npu_models(req: BuildRequest, traced: Traced,
                     progress: Progress) -> tuple[list[NpuModel], dict[str, Outcome]]:
    """The pipeline's models, and the builds of those --npu-models asks for, each built for the NPU as a graph of
    its own (build/npu_models.py) and not yet placed, by name; one that fails stays on the CPU, said on the
    terminal and in the report."""
    models, passed = [], {}
    for name in PIPELINE_MODELS:
        if name not in req.npu_models:
            models.append(NpuModel(name, None, f"--npu-models {','.join(req.npu_models) or 'none'}"))
            continue
        request = npu_models.request(req, name, traced)
        try:
            passed[name], report = _build(request, progress.within(name), deliver=False)
        except (BuildFailed, UserError) as e:
            progress.console.print(f"[yellow]![/] [bold]{name}[/] stays on the CPU: {e}")
            models.append(NpuModel(name, None, str(e)))
            continue
        models.append(NpuModel(name, FinishedBuild(request.out, report)))
    return models, passed


def _gate(req: BuildRequest, metrics: dict, rows: list[dict] | None, images: dict | None) -> None:
    gates = req.gates
    if metrics["psnr_db"] < gates.min_psnr:
        raise BuildFailed(f"output PSNR {metrics['psnr_db']:.1f} dB against ONNX Runtime is under "
                          f"--min-psnr {gates.min_psnr:g} (cosine {metrics['cosine']:.6f})")
    if gates.min_prompt_accuracy is not None:
        accuracy = images["summary"]["rknn_prompt_accuracy"]
        if accuracy < gates.min_prompt_accuracy:
            raise BuildFailed(f"prompt accuracy of the .rknn's images {accuracy:.0%} is under --min-prompt-accuracy "
                              f"{gates.min_prompt_accuracy:.0%} (reference "
                              f"{images['summary']['reference_prompt_accuracy']:.0%})")
    if gates.min_layer_cos is None:
        return
    if rows is None:
        raise BuildFailed("--min-layer-cos needs the per-layer report, which this build skipped "
                          "(see layers_skipped in report.json)")
    row = first_below(rows, gates.min_layer_cos)
    if row is not None:
        raise BuildFailed(f"layer {row['layer']} ({row['module'] or row['onnx_tensor']}) has cosine "
                          f"{row['cosine']:.6f} against ONNX Runtime, under --min-layer-cos {gates.min_layer_cos:g}")


def _deliver(plan: BuildPlan, rewritten: Rewritten, rknn: Converted) -> Delivery:
    """Place the .rknn (or its parts) and its host programs beside report.json (temp name, then rename)."""
    out = plan.request.out
    shutil.rmtree(out / "host", ignore_errors=True)
    host = [str(_place(rewritten.path / rel, out / rel).relative_to(out)) for rel in rewritten.host_programs]
    artifacts = [_place(src, dst) for src, dst in zip(rknn.rknn, plan.artifacts)]
    return Delivery([a.name for a in artifacts], [a.stat().st_size for a in artifacts],
                    [sha256(file_chunks(a)) for a in artifacts], host)


def _place(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    tmp.rename(dst)
    return dst


def _self_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
