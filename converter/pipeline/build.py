"""`rkconvert build`: model -> ONNX -> graph passes -> ONNX Runtime reference -> .rknn -> layers -> report.

Each stage (converter/pipeline/stages/) runs through BuildDir, reused when its inputs are unchanged. The
toolkit runs in a child process; ONNX Runtime runs here, before it, and memory is handed back
between stages, so the two never hold a large model at the same time.
"""

from __future__ import annotations

import os
import resource
import shutil
from dataclasses import replace
from pathlib import Path

from converter.pipeline import graph_cut, hybrid
from converter.pipeline.build_dir import BuildDir, StageResult
from converter.pipeline.pass_selection import TILE_ATTENTION, instances, select
from converter.pipeline.request import BuildRequest
from converter.pipeline.stage_run import run_stage
from converter.pipeline.stages import calib as calib_stage
from converter.pipeline.stages import export as export_stage
from converter.pipeline.stages import images as images_stage
from converter.pipeline.stages import layers as layers_stage
from converter.pipeline.stages import passes as passes_stage
from converter.pipeline.stages import reference as reference_stage
from converter.pipeline.stages import rknn as rknn_stage
from converter.pipeline.stages import split as split_stage
from converter.pipeline.stages import split_calib as split_calib_stage
from converter.common.errors import BuildFailed, UserError
from converter.common.progress import Progress
from converter.imaging.evaluation import SPEC_FILE, EvalSet, eval_set
from converter.reports.cost import cost
from converter.reports.layer_report import estimated_dump_bytes, first_below
from converter.reports.report import print_images, print_layers, write_html, write_json
from converter.toolkit import driver

IMAGES_DIR = "images/evaluation"  # `rkconvert generate` writes beside it, into images/
# --layer-report auto: dump every layer only when the toolkit's text dumps stay under this.
AUTO_LAYER_DUMP_LIMIT = 2 * 2**30


def build(req: BuildRequest, progress: Progress) -> dict:
    """Run every stage; write the artifact, report.json and report.html. Raises UserError / BuildFailed.

    Bad input (UserError) leaves nothing behind that this run created; a failed build leaves its
    completed stages (for reuse and diagnosis) and reports with status "failed", never a .rknn.
    """
    names = select(req.chip, req.passes, req.enable_passes, req.skip_passes, req.attention_tiles)
    check_dtype(req)
    _check_parts(req)
    evaluation = _evaluation(req)
    created = _first_missing(req.out)
    req.out.mkdir(parents=True, exist_ok=True)
    for stale in (req.artifact, *req.out.glob(f"{req.artifact.stem}.part*.rknn"), req.report_path, req.html_path):
        stale.unlink(missing_ok=True)
    report = {"status": "failed", "target": req.chip.name, "model": req.source.spec, "dtype": req.dtype,
              "toolkit_version": driver.toolkit_version(), "min_psnr": req.min_psnr,
              "min_layer_cos": req.min_layer_cos, "command": req.command}
    try:
        _run_stages(req, names, evaluation, BuildDir(req.out, req.rebuild), progress, report)
        report["status"] = "ok"
    except UserError:
        if created:
            shutil.rmtree(created, ignore_errors=True)
        raise
    except BuildFailed as e:
        report["error"] = str(e)
        raise
    finally:
        if req.out.exists():
            report["stages"] = [s.summary() for s in req.stages]
            write_json(req.report_path, report)
            write_html(req.html_path, report)
    return report


def _check_parts(req: BuildRequest) -> None:
    if req.parts in (1, None):
        return
    if req.layer_report == "on" or req.min_layer_cos is not None:
        raise UserError(f"--parts {req.parts}: the per-layer report (--layer-report on, --min-layer-cos) covers a "
                        "model built whole")


def _auto_parts(req: BuildRequest, passes: StageResult) -> tuple[int, str]:
    """--parts auto: (count, why). Whole when the per-layer report is asked for, else as many parts as keep
    each under graph_cut.AUTO_PART_BYTES of float32 weights."""
    if req.layer_report == "on" or req.min_layer_cos is not None:
        return 1, "the per-layer report needs the model whole"
    count = graph_cut.auto_count(passes.meta["onnx_bytes"])
    return count, f"{passes.meta['onnx_bytes'] / 2**30:.1f} GiB of weights, at most " \
                  f"{graph_cut.AUTO_PART_BYTES / 2**30:.0f} GiB per toolkit build"


def _layer_dumps(req: BuildRequest, passes: StageResult, report: dict) -> bool:
    if req.layer_report != "auto":
        return req.layer_report == "on"
    if req.parts > 1:
        report["layers_skipped"] = "the per-layer report covers a model built whole, not --parts"
        return False
    estimate = estimated_dump_bytes(passes.path / passes.meta["onnx"])
    if estimate > AUTO_LAYER_DUMP_LIMIT:
        report["layers_skipped"] = (f"per-layer dumps would take ~{estimate / 2**30:.0f} GiB; "
                                    "pass --layer-report on to make them anyway")
        return False
    return True


def export_model(req: BuildRequest, build_dir: BuildDir, progress: Progress) -> StageResult:
    """The model as ONNX (stage `export`), reused from an earlier run when unchanged."""
    return run_stage(req, build_dir, progress, "export", f"{req.source.spec} to ONNX",
                     {"source": req.source.fingerprint(), "resolution": req.resolution}, [],
                     lambda tmp: export_stage.run(req, tmp))


def prepare(req: BuildRequest, names: list[str], build_dir: BuildDir, progress: Progress,
            report: dict | None = None) -> tuple[StageResult, StageResult]:
    """Stages `export` and `passes`: the graph the toolkit will get. Settles --dtype auto in between (the
    exported weights say whether the model is a W8A16 checkpoint; some passes run for one dtype only)."""
    export = export_model(req, build_dir, progress)
    if req.dtype == "auto":
        req.dtype, choice = req.chip.auto_dtype(export.meta["w8a16_layers"] > 0)
        progress.note(f"--dtype auto: {req.dtype} ({choice})")
        if report is not None:
            report.update(dtype=req.dtype, dtype_choice=choice)
    if req.passes is None:  # a list given with --passes runs as given
        names = req.chip.passes_for(names, req.dtype)
    key = {"passes": names, "attention_tiles": req.attention_tiles if TILE_ATTENTION in names else None}
    passes = run_stage(req, build_dir, progress, "passes", ", ".join(names) or "none", key, [export],
                       lambda tmp: passes_stage.run(export, instances(names, req.chip, req.attention_tiles), tmp))
    return export, passes


def check_dtype(req: BuildRequest) -> None:
    if req.dtype != "auto" and req.dtype not in req.chip.dtypes:
        why = req.chip.refused_dtypes.get(req.dtype, "not an RKNN dtype rkconvert builds")
        raise UserError(f"--dtype {req.dtype} for {req.chip.name}: {why}; "
                        f"{req.chip.name} builds {', '.join(req.chip.dtypes)}")


def calibration(req: BuildRequest, export: StageResult, passes: StageResult, build_dir: BuildDir,
                progress: Progress, name: str = "calib") -> StageResult:
    """Stage `calib` (or another name): recorded UNet inputs in RKNN's dataset format."""
    what = f"{req.calib.samples} inputs along {req.calib.schedule} trajectories"
    return run_stage(req, build_dir, progress, name, what, {"calib": req.calib.fingerprint(), "seed": req.seed},
                     [export, passes], lambda tmp: calib_stage.run(req, export, passes, progress, tmp))


def _checkset(req: BuildRequest, export: StageResult, passes: StageResult, build_dir: BuildDir,
              progress: Progress) -> StageResult:
    """Held-out trajectory inputs to judge the build on: other prompts and noise than the calibration's."""
    held_out = replace(req, seed=req.seed + 1, calib=replace(req.calib, samples=req.check_samples,
                                                             trajectories=req.check_samples))
    return calibration(held_out, export, passes, build_dir, progress, name="checkset")


def toolkit_inputs(req: BuildRequest, names: list[str], build_dir: BuildDir, progress: Progress,
                   report: dict) -> tuple[StageResult, StageResult, StageResult, StageResult | None]:
    """Stages export, passes, reference and (quantized builds) calib: everything the toolkit is handed.
    Settles --dtype auto; notes what it learns in `report`."""
    export, passes = prepare(req, names, build_dir, progress, report)
    report.update(resolution=export.meta["resolution"], weights=export.meta["weights"])
    report.update(onnx_bytes=passes.meta["onnx_bytes"], passes=passes.meta["passes"],
                  inputs=passes.meta["inputs"])
    if req.parts is None:
        req.parts, report["parts_choice"] = _auto_parts(req, passes)
        progress.note(f"--parts auto: {req.parts} ({report['parts_choice']})")
    checkset = _checkset(req, export, passes, build_dir, progress) if req.trajectory_checks else None
    reference = run_stage(req, build_dir, progress, "reference", "ONNX Runtime on check inputs",
                          {"samples": req.check_samples, "seed": req.seed},
                          [passes] + ([checkset] if checkset else []),
                          lambda tmp: reference_stage.run(req, export, passes, checkset, tmp))
    calib = calibration(req, export, passes, build_dir, progress) if req.quantized else None
    return export, passes, reference, calib


def _run_stages(req: BuildRequest, names: list[str], evaluation: EvalSet | None, build_dir: BuildDir,
                progress: Progress, report: dict) -> None:
    export, passes, reference, calib = toolkit_inputs(req, names, build_dir, progress, report)
    dumps = _layer_dumps(req, passes, report)
    report["toolkit_config"] = rknn_stage.toolkit_config(req)
    split = split_model(req, passes, build_dir, progress)
    given = part_calibration(req, passes, split, calib, build_dir, progress)  # what each toolkit build calibrates on
    rknn = convert(req, passes, split, reference, given, dumps, build_dir, progress)
    metrics = rknn_stage.output_accuracy(passes, reference, rknn)
    report.update(output_psnr_db=metrics["psnr_db"], output_cosine=metrics["cosine"],
                  output_max_abs=metrics["max_abs"], output_mean_abs=metrics["mean_abs"],
                  check_inputs=reference.meta["check_inputs"], check_timesteps=reference.meta["timesteps"],
                  calibration=calib.meta if calib else None, toolkit_phases=rknn.meta["phases"],
                  toolkit_phase_peak_rss_bytes=rknn.meta["phase_peak_rss_bytes"],
                  placement=rknn_stage.placement_rows(rknn), cpu_ops=rknn.meta["cpu_ops"])
    if dumps:
        report["layers"] = layer_rows(req, passes, reference, rknn, build_dir, progress)
        print_layers(progress.console, report["layers"])
    if req.quantized and req.hybrid and metrics["psnr_db"] < req.min_psnr:
        rknn = hybrid.fewest_float16(req, passes, split, reference, given, report.get("layers"),
                                     rknn.meta["peak_rss_bytes"],
                                     build_dir, progress, report)
        metrics = rknn_stage.output_accuracy(passes, reference, rknn)
        report.update(output_psnr_db=metrics["psnr_db"], output_cosine=metrics["cosine"],
                      output_max_abs=metrics["max_abs"], output_mean_abs=metrics["mean_abs"],
                      placement=rknn_stage.placement_rows(rknn), cpu_ops=rknn.meta["cpu_ops"])
    report.update(float16_layers=rknn.meta["float16_layers"], rknn_stage=rknn.name,
                  rknn_file=rknn_stage.file_facts(rknn)[0],
                  cost=cost(rknn_stage.placement_rows(rknn), rknn.meta["memory"], req.chip),
                  pipeline=str(req.source.pipeline.resolve()) if req.source.pipeline else None)
    shutil.rmtree(req.out / IMAGES_DIR, ignore_errors=True)
    images = _images(req, evaluation, export, passes, split, reference, rknn, given, build_dir, progress)
    if images is not None:
        # Placed before the gates: a build that fails on its images shows them.
        for png in sorted(images.path.glob("*.png")):
            _place(png, req.out / IMAGES_DIR / png.name)
        report["images"] = {**images.meta, "grid": f"{IMAGES_DIR}/{images.meta['grid']}"}
        print_images(progress.console, images.meta)
    report["peak_rss_bytes"] = {"rkconvert": _self_peak_rss(), "toolkit": rknn.meta["peak_rss_bytes"]}
    _gate(req, metrics, report.get("layers"), report.get("images"))
    _deliver(req, passes, rknn, report)


def split_model(req: BuildRequest, passes: StageResult, build_dir: BuildDir, progress: Progress) -> StageResult | None:
    """Stage `split` under --parts N (N > 1): the graph the toolkit gets, as N parts; None for a whole model."""
    if req.parts == 1:
        return None
    return run_stage(req, build_dir, progress, "split", f"the graph cut into {req.parts} parts of about equal weight",
                     {"parts": req.parts}, [passes], lambda tmp: split_stage.run(passes, req.parts, tmp))


def part_calibration(req: BuildRequest, passes: StageResult, split: StageResult | None, calib: StageResult | None,
                     build_dir: BuildDir, progress: Progress) -> StageResult | None:
    """Stage `split-calib` for a quantized build in parts: each part's calibration inputs; else `calib` as it is."""
    if split is None or calib is None:
        return calib
    return run_stage(req, build_dir, progress, "split-calib", "each part's calibration inputs (ONNX Runtime on the "
                     "parts before it)", {}, [passes, split, calib],
                     lambda tmp: split_calib_stage.run(passes, split, calib, progress, tmp))


def convert(req: BuildRequest, passes: StageResult, split: StageResult | None, reference: StageResult,
            calib: StageResult | None, dumps: bool, build_dir: BuildDir, progress: Progress) -> StageResult:
    """Stage `rknn`: the toolkit's build (of each part, in turn, with `split`), simulated on the check inputs
    (and every layer dumped if `dumps`)."""
    what = f"rknn-toolkit2 {req.dtype} build for {req.chip.name} + simulator"
    what += f", {req.parts} parts" if split else ""
    return run_stage(req, build_dir, progress, "rknn", what,
                     {"target": req.chip.name, "dtype": req.dtype, "layer_dumps": dumps, **rknn_stage.toolkit_config(req)},
                     [passes, reference] + ([calib] if calib else []) + ([split] if split else []),
                     lambda tmp: rknn_stage.run(req, passes, split, reference, calib, dumps,
                                                build_dir.logs / "rknn.log", progress, tmp))


def layer_rows(req: BuildRequest, passes: StageResult, reference: StageResult, rknn: StageResult,
               build_dir: BuildDir, progress: Progress) -> list[dict]:
    """Stage `layers`: the per-layer report's rows of a `convert` with dumps."""
    layers = run_stage(req, build_dir, progress, "layers", "every layer against ONNX Runtime", {},
                       [passes, reference, rknn], lambda tmp: layers_stage.run(passes, reference, rknn, tmp))
    return layers_stage.rows(layers)


def _evaluation(req: BuildRequest) -> EvalSet | None:
    """The evaluation set the image check draws (None: no image check); UserError when a flag needs one
    the model does not bring."""
    evaluation = eval_set(req.source.pipeline) if req.source.pipeline and req.image_check != "off" else None
    if evaluation is None and req.image_check == "on":
        raise UserError(f"--image-check on: {req.source.spec} is not a text-to-image pipeline folder with an "
                        f"evaluation set ({SPEC_FILE})")
    if req.min_prompt_accuracy is not None and (evaluation is None or evaluation.judge is None):
        raise UserError(f"--min-prompt-accuracy: {req.source.spec} brings no judge of its images (a pipeline "
                        f"folder's {SPEC_FILE} names one; the demo's does)")
    return evaluation


def _images(req: BuildRequest, evaluation: EvalSet | None, export: StageResult, passes: StageResult,
            split: StageResult | None, reference: StageResult, rknn: StageResult, calib: StageResult | None,
            build_dir: BuildDir, progress: Progress) -> StageResult | None:
    """Stage `images` when the model brings an evaluation set (and --image-check is not off)."""
    if evaluation is None:
        return None
    what = f"{len(evaluation.prompts)} prompts, {evaluation.steps} steps, ONNX Runtime vs the .rknn in the simulator"
    return run_stage(req, build_dir, progress, "images", what,
                     {"evaluation": evaluation.fingerprint(), "dtype": req.dtype, "target": req.chip.name},
                     [export, passes, reference, rknn] + ([calib] if calib else []) + ([split] if split else []),
                     lambda tmp: images_stage.run(req, export, passes, split, reference, rknn, calib, evaluation,
                                                  build_dir.logs / "rknn-images.log", progress, tmp))


def _gate(req: BuildRequest, metrics: dict, rows: list[dict] | None, images: dict | None) -> None:
    if metrics["psnr_db"] < req.min_psnr:
        raise BuildFailed(f"output PSNR {metrics['psnr_db']:.1f} dB against ONNX Runtime is under "
                          f"--min-psnr {req.min_psnr:g} (cosine {metrics['cosine']:.6f})")
    if req.min_prompt_accuracy is not None:
        accuracy = images["summary"]["rknn_prompt_accuracy"]
        if accuracy < req.min_prompt_accuracy:
            raise BuildFailed(f"prompt accuracy of the .rknn's images {accuracy:.0%} is under --min-prompt-accuracy "
                              f"{req.min_prompt_accuracy:.0%} (reference "
                              f"{images['summary']['reference_prompt_accuracy']:.0%})")
    if req.min_layer_cos is None:
        return
    if rows is None:
        raise BuildFailed("--min-layer-cos needs the per-layer report, which this build skipped "
                          "(see layers_skipped in report.json)")
    row = first_below(rows, req.min_layer_cos)
    if row is not None:
        raise BuildFailed(f"layer {row['layer']} ({row['module'] or row['onnx_tensor']}) has cosine "
                          f"{row['cosine']:.6f} against ONNX Runtime, under --min-layer-cos {req.min_layer_cos:g}")


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what this run would create)."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def _deliver(req: BuildRequest, passes: StageResult, rknn: StageResult, report: dict) -> None:
    """Place the .rknn (or its parts) and its host programs beside report.json (temp name, then rename)."""
    host_dir = req.out / "host"
    shutil.rmtree(host_dir, ignore_errors=True)
    host = []
    for rel in passes.meta["host_programs"]:
        host.append(str(_place(passes.path / rel, req.out / rel).relative_to(req.out)))
    artifacts = [_place(rknn.path / rel, dst) for rel, dst in zip(rknn.meta["rknn"], req.artifacts)]
    total = sum(a.stat().st_size for a in artifacts)
    report.update(artifact=artifacts[0].name, artifact_bytes=total, host_programs=host,
                  artifact_to_onnx=round(total / report["onnx_bytes"], 4))
    if len(artifacts) > 1:
        report["parts"] = [{"artifact": a.name, "bytes": a.stat().st_size, **io, "rknn_file": facts}
                           for a, io, facts in zip(artifacts, rknn.meta["part_io"], rknn_stage.file_facts(rknn))]


def _place(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    tmp.rename(dst)
    return dst


def _self_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
