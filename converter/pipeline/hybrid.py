"""The hybrid search: a quantized build under --min-psnr keeps the fewest of its noisiest layers in
float16 that reach it. Each try is a toolkit build (stage `hybrid-<k>`): one at a time, --hybrid-parallel
at once in their own toolkit processes, or as tasks on a Ray cluster (--ray)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from converter.pipeline.build_dir import BuildDir, StageResult
from converter.pipeline.request import BuildRequest
from converter.pipeline.stage_run import run_stage
from converter.pipeline.stages import rknn as rknn_stage
from converter.common import ray_cluster
from converter.common.errors import BuildFailed
from converter.common.progress import Progress
from converter.quantization.fewest_search import fewest_in_rounds
from converter.reports.layer_report import quantization_suspects

# A trial on Ray asks for the plain build's toolkit peak and this much more (its float16 layers).
TRIAL_MEMORY_MARGIN = 1.25


def fewest_float16(req: BuildRequest, passes: StageResult, split: StageResult | None, reference: StageResult,
                   calib: StageResult, rows: list[dict] | None, toolkit_peak_bytes: int, build_dir: BuildDir,
                   progress: Progress,
                   report: dict) -> StageResult:
    """The quantized build with the fewest layers kept in float16 that reaches --min-psnr.

    Layers go to float16 in the order of the noise they add (per-layer report of the plain build);
    fewest_search asks for as few builds as it can, at most --hybrid-builds, --hybrid-parallel of them
    at once. BuildFailed when none it tried reaches the gate.
    """
    if rows is None:
        raise BuildFailed(f"output PSNR is under --min-psnr {req.min_psnr:g} and choosing layers to keep in "
                          "float16 needs the per-layer report, which this build skipped (--layer-report on; a build "
                          "in parts has none: --parts 1)")
    ranked = quantization_suspects(rows)
    trials: dict[int, tuple[StageResult, float]] = {}
    with ray_cluster.joined(req.ray_address) if req.ray_address else nullcontext() as ray:
        if ray is not None:  # a trial holds what the plain build's toolkit child held, give or take
            on_node = ray.remote(num_cpus=1, memory=int(TRIAL_MEMORY_MARGIN * toolkit_peak_bytes))(
                rknn_stage.run_unattended)

        def produce(k: int, shown: Progress, tmp: Path) -> dict:
            layers = ranked[:k]
            log = build_dir.logs / ("rknn.log" if req.hybrid_parallel == 1 else f"rknn-hybrid-{k}.log")
            if ray is None:
                return rknn_stage.run(req, passes, split, reference, calib, False, log, shown, tmp, layers)
            here = [replace(s, path=s.path.resolve()) if s else None for s in (passes, split, reference, calib)]
            try:  # paths as every node sees them, not relative to this process's folder
                return ray.get(on_node.remote(req, *here, log.resolve(), tmp.resolve(), layers))
            except ray.exceptions.RayTaskError as e:  # the toolkit failing there fails the build as here
                raise e.cause if isinstance(e.cause, BuildFailed) else BuildFailed(
                    f"hybrid trial with {k} float16 layers on Ray: {e.cause!r}") from None

        def trial(k: int, shown: Progress) -> None:
            stage = run_stage(req, build_dir, shown, f"hybrid-{k}", f"{req.dtype} with the {k} noisiest layers in "
                              "float16", {"target": req.chip.name, "dtype": req.dtype, "float16": ranked[:k],
                                          **rknn_stage.toolkit_config(req)},
                              [passes, reference, calib] + ([split] if split else []),
                              lambda tmp: produce(k, shown, tmp))
            trials[k] = (stage, rknn_stage.output_accuracy(passes, reference, stage)["psnr_db"])

        def reach_gate(ks: list[int]) -> list[bool]:
            if len(ks) == 1:
                trial(ks[0], progress)
            else:  # each build in its own toolkit child (or Ray task); one live line for the round
                where = f" on Ray at {req.ray_address}" if ray is not None else ""
                with progress.stage("hybrid", f"{req.dtype} with {', '.join(map(str, ks))} layers in float16, "
                                              f"{len(ks)} builds at once{where}"), ThreadPoolExecutor(len(ks)) as pool:
                    list(pool.map(lambda k: trial(k, Progress(Console(quiet=True))), ks))
            return [trials[k][1] >= req.min_psnr for k in ks]

        k = fewest_in_rounds(len(ranked), reach_gate, req.hybrid_parallel, budget=req.hybrid_builds)
    report["hybrid_trials"] = [{"float16_layers": n, "psnr_db": psnr} for n, (_, psnr) in sorted(trials.items())]
    if k is None:
        best, psnr = max(((n, p) for n, (_, p) in trials.items()), key=lambda t: t[1])
        limit = (f"within --hybrid-builds {req.hybrid_builds}" if len(trials) == req.hybrid_builds
                 else f"even with all {len(ranked)} layers in float16")
        raise BuildFailed(f"output PSNR is under --min-psnr {req.min_psnr:g} {limit}: best {psnr:.1f} dB with "
                          f"{best} layers in float16")
    return trials[k][0]
