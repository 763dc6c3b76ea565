"""The hybrid search: a quantized build under --min-psnr keeps the fewest of its noisiest layers in
float16 that reach it. Each try is a toolkit build (stage `hybrid-<k>`): one at a time, --hybrid-parallel
at once in their own toolkit processes, or as tasks on a Ray cluster (--ray)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from converter.common import ray_cluster
from converter.common.errors import BuildFailed
from converter.common.progress import Progress
from converter.pipeline.plan import BuildPlan
from converter.pipeline.stage_run import StageRunner
from converter.pipeline.stages import rknn as rknn_stage
from converter.pipeline.stages.rknn import Converted
from converter.pipeline.toolkit_inputs import ToolkitInputs
from converter.quantization.fewest_search import fewest_in_rounds
from converter.reports.layer_report import quantization_suspects

# A trial on Ray asks for the plain build's toolkit peak and this much more (its float16 layers).
TRIAL_MEMORY_MARGIN = 1.25


@dataclass(frozen=True)
class Trial:
    float16_layers: int
    converted: Converted
    psnr_db: float


@dataclass(frozen=True)
class HybridSearch:
    trials: list[Trial]  # by float16 layer count
    found: Trial | None  # the fewest float16 layers that reached the gate
    candidates: int  # layers the search could keep in float16

    def rows(self) -> list[dict]:
        """report.json `hybrid_trials`."""
        return [{"float16_layers": t.float16_layers, "psnr_db": t.psnr_db} for t in self.trials]

    def shortfall(self, min_psnr: float, budget: int) -> str:
        """Why none reached the gate, in one line."""
        best = max(self.trials, key=lambda t: t.psnr_db)
        limit = (f"within --hybrid-builds {budget}" if len(self.trials) == budget
                 else f"even with all {self.candidates} layers in float16")
        return (f"output PSNR is under --min-psnr {min_psnr:g} {limit}: best {best.psnr_db:.1f} dB with "
                f"{best.float16_layers} layers in float16")


def search(plan: BuildPlan, given: ToolkitInputs, rows: list[dict] | None, toolkit_peak_bytes: int,
           runner: StageRunner) -> HybridSearch:
    """Quantized builds with more and more layers in float16, in the order of the noise they add (per-layer
    report `rows` of the plain build); fewest_search asks for as few builds as it can, at most
    --hybrid-builds, --hybrid-parallel of them at once."""
    settings, min_psnr = plan.request.hybrid, plan.request.gates.min_psnr
    if rows is None:
        raise BuildFailed(f"output PSNR is under --min-psnr {min_psnr:g} and choosing layers to keep in "
                          "float16 needs the per-layer report, which this build skipped (--layer-report on; a build "
                          "in parts has none: --parts 1)")
    ranked = quantization_suspects(rows)
    trials: dict[int, Trial] = {}
    with ray_cluster.joined(settings.ray_address) if settings.ray_address else nullcontext() as ray:
        if ray is not None:  # a trial holds what the plain build's toolkit child held, give or take
            on_node = ray.remote(num_cpus=1, memory=int(TRIAL_MEMORY_MARGIN * toolkit_peak_bytes))(
                rknn_stage.run_unattended)

        def produce(k: int, shown: Progress, tmp: Path) -> dict:
            jobs = given.jobs(plan.toolkit, ranked[:k])
            log = runner.logs / ("rknn.log" if settings.parallel == 1 else f"rknn-hybrid-{k}.log")
            if ray is None:
                return rknn_stage.run(jobs, given.reference, False, log, shown, tmp)
            try:  # stage paths are absolute: every node that sees the build folder finds them
                return ray.get(on_node.remote(jobs, given.reference, log, tmp))
            except ray.exceptions.RayTaskError as e:  # the toolkit failing there fails the build as here
                raise e.cause if isinstance(e.cause, BuildFailed) else BuildFailed(
                    f"hybrid trial with {k} float16 layers on Ray: {e.cause!r}") from None

        def trial(k: int, shown: Progress) -> None:
            record = runner.run(f"hybrid-{k}", f"{plan.dtype} with the {k} noisiest layers in float16",
                                {"target": plan.chip.name, "dtype": plan.dtype, "float16": ranked[:k],
                                 **plan.toolkit.options}, given.stages, lambda tmp: produce(k, shown, tmp), shown)
            converted = Converted.read(record)
            trials[k] = Trial(k, converted, converted.accuracy(given.reference)["psnr_db"])

        def reach_gate(ks: list[int]) -> list[bool]:
            if len(ks) == 1:
                trial(ks[0], runner.progress)
            else:  # each build in its own toolkit child (or Ray task); one live line for the round
                where = f" on Ray at {settings.ray_address}" if ray is not None else ""
                with runner.progress.stage("hybrid", f"{plan.dtype} with {', '.join(map(str, ks))} layers in "
                                                     f"float16, {len(ks)} builds at once{where}"), \
                        ThreadPoolExecutor(len(ks)) as pool:
                    list(pool.map(lambda k: trial(k, Progress(Console(quiet=True))), ks))
            return [trials[k].psnr_db >= min_psnr for k in ks]

        k = fewest_in_rounds(len(ranked), reach_gate, settings.parallel, budget=settings.builds)
    return HybridSearch([trials[n] for n in sorted(trials)], trials[k] if k is not None else None, len(ranked))
