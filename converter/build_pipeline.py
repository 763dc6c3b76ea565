"""`rkconvert build`: model -> ONNX -> graph passes -> ONNX Runtime reference -> .rknn -> report.

Each stage runs through BuildDir (reused when its inputs are unchanged). The toolkit runs in a child
process; ONNX Runtime runs here, before it, so the two never hold a large model at the same time.
"""

from __future__ import annotations

import os
import resource
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calib_data.check_inputs import check_inputs, check_timesteps
from targets import rknn_backend
from targets.chip import Chip

from . import memory, onnx_files, onnx_runtime
from .accuracy import compare
from .build_dir import BuildDir, StageResult
from .errors import BuildFailed, UserError
from .host_programs import graph_feed
from .model_source import ModelSource
from .progress import Progress
from .report import write_json
from .unet_interface import check_unet, graph_inputs, specs_of

DTYPE = "float16"


@dataclass
class BuildRequest:
    source: ModelSource
    chip: Chip
    out: Path
    resolution: int | None = None
    min_psnr: float = 40.0
    check_samples: int = 1
    seed: int = 0
    skip_passes: tuple[str, ...] = ()
    rebuild: bool = False
    stages: list[StageResult] = field(default_factory=list)

    @property
    def artifact(self) -> Path:
        return self.out / f"{self.source.name}-{self.chip.name}.rknn"

    @property
    def report_path(self) -> Path:
        return self.out / "report.json"


def _specs_json(specs) -> dict:
    return {name: {"shape": shape, "dtype": np.dtype(dtype).name} for name, (shape, dtype) in specs.items()}


def _specs_from_json(data: dict):
    return {name: (v["shape"], np.dtype(v["dtype"])) for name, v in data.items()}


def _export(req: BuildRequest, tmp: Path) -> dict:
    path = tmp / "model.onnx"
    source = req.source
    if source.kind == "onnx":
        model = onnx_files.load(source.path)
        specs = check_unet(model, source.path)
        resolution = specs["sample"][0][-1] * 8
        if req.resolution not in (None, resolution):
            raise UserError(f"{source.path}: shapes are fixed at {resolution} px; drop --resolution or re-export")
        onnx_files.save(model, path)
    else:
        from . import tracing

        unet = source.load_unet()
        resolution = req.resolution or unet.config.sample_size * tracing.VAE_SCALE
        tracing.trace(unet, resolution, path)
        del unet
        specs = check_unet(onnx_files.load(path, with_weights=False), path)
    return {"onnx": path.name, "resolution": resolution, "inputs": _specs_json(specs)}


def _passes(req: BuildRequest, export: StageResult, names: list[str], tmp: Path) -> dict:
    from graph_passes import CATALOGUE, run_pass

    model = onnx_files.load(export.path / export.meta["onnx"])
    reports, programs = [], []
    (tmp / "host").mkdir()
    for name in names:
        model, report, host = run_pass(CATALOGUE[name], model)
        reports.append(report.as_dict())
        for program in host:
            path = tmp / "host" / f"{program.name}.onnx"
            onnx_files.save(program.model, path)
            programs.append(f"host/{path.name}")
    files = onnx_files.save(model, tmp / "model.onnx")
    return {
        "onnx": "model.onnx",
        "onnx_bytes": sum(f.stat().st_size for f in files),
        "passes": reports,
        "host_programs": programs,
        "inputs": _specs_json(specs_of(graph_inputs(model))),
        "outputs": [o.name for o in model.graph.output],
    }


def _reference(req: BuildRequest, export: StageResult, passes: StageResult, tmp: Path) -> dict:
    onnx_path = passes.path / passes.meta["onnx"]
    programs = [passes.path / p for p in passes.meta["host_programs"]]
    graph_input_names = list(passes.meta["inputs"])
    feeds = check_inputs(_specs_from_json(export.meta["inputs"]), req.check_samples, req.seed)
    for sub in ("inputs", "outputs"):
        (tmp / sub).mkdir()
    samples, outputs = [], []
    try:
        session = onnx_runtime.session(onnx_path)
        for i, feed in enumerate(feeds):
            graph = graph_feed(feed, programs, graph_input_names)
            samples.append(_save_arrays(tmp, "inputs", i, graph))
            outputs.append(_save_arrays(tmp, "outputs", i, onnx_runtime.run(session, graph)))
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
        raise BuildFailed(f"ONNX Runtime cannot run {onnx_path}: {str(e).splitlines()[0]}") from None
    return {"timesteps": check_timesteps(req.check_samples), "samples": samples, "outputs": outputs}


def _save_arrays(root: Path, sub: str, index: int, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    names = {}
    for name, value in arrays.items():
        rel = f"{sub}/{index}-{name}.npy"
        np.save(root / rel, value)
        names[name] = rel
    return names


def _rknn(req: BuildRequest, passes: StageResult, reference: StageResult, log: Path,
          progress: Progress, tmp: Path) -> dict:
    samples = [{k: reference.path / v for k, v in s.items()} for s in reference.meta["samples"]]
    run, result = rknn_backend.build_and_simulate(
        passes.path / passes.meta["onnx"], req.chip, tmp, samples, list(passes.meta["inputs"]),
        passes.meta["outputs"], log, progress.tick)
    return {
        "rknn": rknn_backend.RKNN_NAME,
        "toolkit_version": rknn_backend.toolkit_version(),
        "phases": result["phases"],
        "peak_rss_bytes": run.peak_rss_bytes,
        "simulator": [[str(Path(p).relative_to(tmp.resolve())) for p in outs] for outs in result["outputs"]],
    }


def _accuracy(passes: StageResult, reference: StageResult, rknn: StageResult) -> dict:
    names = passes.meta["outputs"]
    ref = np.concatenate([np.load(reference.path / o[n]).ravel() for o in reference.meta["outputs"] for n in names])
    sim = np.concatenate([np.load(rknn.path / p).ravel() for outs in rknn.meta["simulator"] for p in outs])
    return compare(sim, ref)


def _stage(req: BuildRequest, build_dir: BuildDir, progress: Progress, name: str, what: str,
           material: dict, after: list[StageResult], produce) -> StageResult:
    def produce_with_progress(tmp: Path) -> dict:
        with progress.stage(name, what):
            return produce(tmp)

    result = build_dir.run(name, material, after, produce_with_progress)
    memory.release()
    if result.reused:
        progress.reused(name, what)
    req.stages.append(result)
    return result


def pass_list(chip: Chip, skip: tuple[str, ...]) -> list[str]:
    from graph_passes import CATALOGUE

    unknown = [s for s in skip if s not in CATALOGUE]
    if unknown:
        raise UserError(f"--skip-pass {unknown[0]}: no such pass (known: {', '.join(CATALOGUE)})")
    return [p for p in chip.passes if p not in skip]


def build(req: BuildRequest, progress: Progress) -> dict:
    """Run every stage; write the artifact and report.json. Raises UserError / BuildFailed.

    Bad input (UserError) leaves nothing behind that this run created; a failed build leaves its
    completed stages (for reuse and diagnosis) and a report.json with status "failed", never a .rknn.
    """
    names = pass_list(req.chip, req.skip_passes)
    created = _first_missing(req.out)
    req.out.mkdir(parents=True, exist_ok=True)
    for stale in (req.artifact, req.report_path):
        stale.unlink(missing_ok=True)
    report = {"status": "failed", "target": req.chip.name, "model": req.source.spec, "dtype": DTYPE,
              "toolkit_version": rknn_backend.toolkit_version(), "min_psnr": req.min_psnr}
    try:
        _run_stages(req, names, BuildDir(req.out, req.rebuild), progress, report)
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
    return report


def _run_stages(req: BuildRequest, names: list[str], build_dir: BuildDir, progress: Progress, report: dict) -> None:
    export = _stage(req, build_dir, progress, "export", f"{req.source.spec} to ONNX",
                    {"source": req.source.fingerprint(), "resolution": req.resolution}, [],
                    lambda tmp: _export(req, tmp))
    report["resolution"] = export.meta["resolution"]
    passes = _stage(req, build_dir, progress, "passes", ", ".join(names) or "none",
                    {"passes": names}, [export], lambda tmp: _passes(req, export, names, tmp))
    report.update(onnx_bytes=passes.meta["onnx_bytes"], passes=passes.meta["passes"],
                  inputs=passes.meta["inputs"])
    reference = _stage(req, build_dir, progress, "reference", "ONNX Runtime on check inputs",
                       {"samples": req.check_samples, "seed": req.seed}, [passes],
                       lambda tmp: _reference(req, export, passes, tmp))
    rknn = _stage(req, build_dir, progress, "rknn", f"rknn-toolkit2 build for {req.chip.name} + simulator",
                  {"target": req.chip.name, "dtype": DTYPE}, [passes, reference],
                  lambda tmp: _rknn(req, passes, reference, build_dir.logs / "rknn.log", progress, tmp))
    metrics = _accuracy(passes, reference, rknn)
    report.update(output_psnr_db=metrics["psnr_db"], output_cosine=metrics["cosine"],
                  output_max_abs=metrics["max_abs"], output_mean_abs=metrics["mean_abs"],
                  check_timesteps=reference.meta["timesteps"], toolkit_phases=rknn.meta["phases"],
                  peak_rss_bytes={"rkconvert": _self_peak_rss(), "toolkit": rknn.meta["peak_rss_bytes"]})
    if metrics["psnr_db"] < req.min_psnr:
        raise BuildFailed(f"output PSNR {metrics['psnr_db']:.1f} dB against ONNX Runtime is under "
                          f"--min-psnr {req.min_psnr:g} (cosine {metrics['cosine']:.6f})")
    _deliver(req, passes, rknn, report)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what this run would create)."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def _deliver(req: BuildRequest, passes: StageResult, rknn: StageResult, report: dict) -> None:
    """Place the .rknn and its host programs beside report.json (temp name, then rename)."""
    host_dir = req.out / "host"
    shutil.rmtree(host_dir, ignore_errors=True)
    host = []
    for rel in passes.meta["host_programs"]:
        host.append(str(_place(passes.path / rel, req.out / rel).relative_to(req.out)))
    artifact = _place(rknn.path / rknn.meta["rknn"], req.artifact)
    report.update(artifact=artifact.name, artifact_bytes=artifact.stat().st_size, host_programs=host)


def _place(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    tmp.rename(dst)
    return dst


def _self_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
