"""The hybrid search: a quantized build under --min-psnr keeps the fewest of its costliest layers in
float16 that reach it. The order is measured (stage `sensitivity`: each layer's cost at the output,
from gradients and ONNX Runtime's emulation of the toolkit's int8), and so is the first guess: the
emulated output PSNR with the first k left float, shifted by how far the emulation of the plain build
sits from the simulator's, says where the gate lies; the search starts there instead of at one layer,
does not build what it puts well under the gate, and stops before any build when the guess is over
--hybrid-max-float16 of the layers. Each try's PSNR corrects the emulation where it was built, and the
corrected curve names the next try; the search stops within HybridSettings.slack of the fewest. Each
try is a toolkit build (stage `hybrid-<k>`; from the plain build's quantization, step2 only, where the
range algorithm allows it: ToolkitSettings.step1_reusable): one at a time, --hybrid-parallel at once
in their own toolkit processes, or as tasks on a Ray cluster (--ray)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from converter.builds.plan import BuildPlan
from converter.builds.stage_run import StageRunner
from converter.builds.stages import rknn as rknn_stage
from converter.builds.stages.rknn import Converted
from converter.builds.stages.sensitivity import Sensitivities
from converter.builds.toolkit_inputs import ToolkitInputs
from converter.common import ray_cluster
from converter.common.errors import BuildFailed
from converter.common.progress import Progress
from converter.mixed_precision.fewest_search import fewest_in_rounds

# A trial on Ray asks for the plain build's toolkit peak and this much more (its float16 layers).
TRIAL_MEMORY_MARGIN = 1.25
# Trials the emulation puts this far under the gate are not built (it agrees with the simulator within
# ~1 dB on the plain build: the tiny sensitive UNet 39.3 against 39.5 dB, the demo 28.8 against 28.3).
FLOOR_MARGIN_DB = 2.0


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
    predicted: int  # where the emulation put the gate: the first try
    floor: int  # at most this many the emulation put well under the gate: not built

    def rows(self) -> list[dict]:
        """report.json `hybrid_trials`."""
        return [{"float16_layers": t.float16_layers, "toolkit_tensors": len(t.converted.float16_layers),
                 "psnr_db": t.psnr_db} for t in self.trials]

    def shortfall(self, min_psnr: float, budget: int) -> str:
        """Why none reached the gate, in one line."""
        best = max(self.trials, key=lambda t: t.psnr_db)
        limit = (f"within --hybrid-builds {budget}" if len(self.trials) == budget
                 else f"even with all {self.candidates} layers in float16")
        return (f"output PSNR is under --min-psnr {min_psnr:g} {limit}: best {best.psnr_db:.1f} dB with "
                f"{best.float16_layers} layers in float16")


def guess(sensitivities: Sensitivities, plain_psnr: float, min_psnr: float, max_share: float) -> tuple[int, int]:
    """Where the emulation puts the gate: the first build to try, and the most layers it says fall
    FLOOR_MARGIN_DB short (taken to fail unbuilt). Raises BuildFailed when the gate is out of reach or
    needs over `max_share` of the layers (a build mostly float16 is a float16 build in all but name)."""
    total = len(sensitivities.ranking)
    k = sensitivities.predicted(min_psnr, {0: plain_psnr}, range(total + 1))
    if k is None or k > max_share * total:
        needs = (f"it stays under the gate even with all {total} layers float" if k is None else
                 f"reaching it needs about {k} of {total} layers ({k / total:.0%}) in float16, over "
                 f"--hybrid-max-float16 {max_share:g}")
        raise BuildFailed(f"output PSNR {plain_psnr:.1f} dB is under --min-psnr {min_psnr:g}, and the emulation "
                          f"(stage sensitivity) predicts {needs}; lower --min-psnr, or build --dtype float16")
    shift = sensitivities.curve[0] - plain_psnr  # the emulation's error against the simulator's
    short = [n for n, db in sensitivities.curve.items() if n < k and db - shift < min_psnr - FLOOR_MARGIN_DB]
    return max(k, 1), max(short, default=0)


def search(plan: BuildPlan, given: ToolkitInputs, sensitivities: Sensitivities, plain: Converted,
           plain_psnr: float, runner: StageRunner) -> HybridSearch:
    """Quantized builds with more and more of the costliest layers in float16, from the emulation's guess;
    fewest_search asks for as few builds as it can, at most --hybrid-builds, --hybrid-parallel at once.
    Each starts from the `plain` build's step1 where it can (its quantization; only step2 runs)."""
    settings, min_psnr = plan.request.hybrid, plan.request.gates.min_psnr
    start, floor = guess(sensitivities, plain_psnr, min_psnr, settings.max_float16)
    ranked = sensitivities.ranking
    trials: dict[int, Trial] = {}
    with ray_cluster.joined(settings.ray_address) if settings.ray_address else nullcontext() as ray:
        if ray is not None:  # a trial holds what the plain build's toolkit child held, give or take
            on_node = ray.remote(num_cpus=1, memory=int(TRIAL_MEMORY_MARGIN * plain.peak_rss_bytes))(
                rknn_stage.run_unattended)

        def produce(k: int, shown: Progress, tmp: Path) -> dict:
            jobs = given.jobs(plan.toolkit, sensitivities.float16_names(k), plain.step1)
            log = runner.logs / ("rknn.log" if settings.parallel == 1 else f"rknn-hybrid-{k}.log")
            if ray is None:
                return rknn_stage.run(jobs, given.reference, False, log, shown, tmp, plan.request.parts_in_turn)
            try:  # stage paths are absolute: every node that sees the build folder finds them
                return ray.get(on_node.remote(jobs, given.reference, log, tmp, plan.request.parts_in_turn))
            except ray.exceptions.RayTaskError as e:  # the toolkit failing there fails the build as here
                raise e.cause if isinstance(e.cause, BuildFailed) else BuildFailed(
                    f"hybrid trial with {k} float16 layers on Ray: {e.cause!r}") from None

        def trial(k: int, shown: Progress) -> None:
            record = runner.run(f"hybrid-{k}", f"{plan.dtype} with the {k} costliest layers in float16",
                                plan.toolkit.key(float16=sensitivities.float16_names(k)),
                                [*given.stages, plain], lambda tmp: produce(k, shown, tmp), shown)
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

        def refit(low: int, high: int | None) -> int | None:  # the emulation, corrected by every try so far
            measured = {0: plain_psnr, **{n: t.psnr_db for n, t in trials.items()}}
            return sensitivities.predicted(min_psnr, measured, range(low + 1, high or len(ranked) + 1))

        k = fewest_in_rounds(len(ranked), reach_gate, settings.parallel, budget=settings.builds, start=start,
                             floor=floor, guide=refit, slack=settings.slack)
    return HybridSearch([trials[n] for n in sorted(trials)], trials[k] if k is not None else None, len(ranked),
                        start, floor)
