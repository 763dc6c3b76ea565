"""Stage `sensitivity` (a quantized build under --min-psnr): what quantizing each tensor the toolkit
quantized costs at the output, with the toolkit's own scales, on calibration inputs: to first order from
gradients (converter/mixed_precision/gradient.py: a few backward passes for all tensors; it ranks as
quantizing each alone in ONNX Runtime's emulation does, converter/mixed_precision/sensitivity.py, which
costs an inference per tensor), the costliest VERIFIED of them measured again each quantized alone.
Gives the order in which the hybrid search keeps layers in float16, and the emulated output PSNR on the
check inputs (the gate's measure) when the first k of them stay float, from which the search predicts
where the gate lies. Past --hybrid-rank-resolution (SD 1.5 at 512 px: its gradients would need tens of
GB) the gradients are taken on a proxy, the model exported at that resolution, and carried to the
build's tensors by converter/mixed_precision/proxy.py; the curve is then measured at SPARSE counts."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calib_data.dataset_writer import read_samples
from converter.builds.build_dir import StageOutput, StageResult
from converter.builds.stage_run import StageRunner
from converter.builds.stages.calib import Calibration
from converter.builds.stages.passes import Rewritten
from converter.builds.stages.reference import Reference
from converter.builds.stages.rknn import Converted
from converter.common.errors import BuildFailed
from converter.common.onnx_graph import Graph
from converter.common.progress import Progress
from converter.mixed_precision.sensitivity import Emulation, Sensitivity, emulate, spread
from converter.toolkit import quant_config

RANKING = "ranking.json"
# Calibration inputs measured on, spread over the recorded trajectories. On the demo 2 rank as 4 do
# (each tensor emulated alone: Spearman 0.9997, the same first 64 tensors; 1 input: 0.98, 59 of the 64).
FEEDS = 2
REPORTED = 20  # costliest tensors in report.json
# The costliest by gradients are measured again, each quantized alone: first order misjudges a tensor whose
# int8 error is no small change (the test's conv with one channel x1000 rounds its other 63 to zero: 8th
# by gradients, first by far quantized alone).
VERIFIED = 32
# The emulated curve is measured at every k up to DENSE, then at CURVE_STEPS steps to the end.
DENSE, CURVE_STEPS = 64, 64
SPARSE = 14  # the counts of the curve measured at the build's resolution when ranked on a proxy
EXACT_DB = 999.0  # the PSNR of outputs equal to the reference (JSON has no infinity)


@dataclass(frozen=True)
class Sensitivities(StageOutput):
    ranking: list[dict]  # {"tensor", "names", "alone_db"}, the costliest first
    curve: dict[int, float]  # k -> emulated output PSNR on the check inputs, the first k of `ranking` left float
    unmatched: int  # toolkit tensors no ONNX tensor agrees with (not emulated, not ranked)
    proxy: str | None  # the smaller inputs ranked on, in words; None: the build's own graph

    @classmethod
    def read(cls, record: StageResult) -> Sensitivities:
        data = json.loads((record.path / record.meta["ranking"]).read_text())
        return cls(record, data["ranking"], {int(k): v for k, v in data["curve"].items()}, record.meta["unmatched"],
                   record.meta["proxy"])

    def summary(self) -> dict:
        """report.json `sensitivity`: the costliest tensors and the emulated curve."""
        return {"tensors": len(self.ranking), "unmatched": self.unmatched, "proxy": self.proxy,
                "emulated_psnr_db": self.curve,
                "costliest": [{"tensor": r["tensor"], "alone_db": round(r["alone_db"], 2)}
                              for r in self.ranking[:REPORTED]]}

    def float16_names(self, k: int) -> list[str]:
        """The toolkit's names of the first `k` ranked tensors: what a trial keeps float16, each once (the
        two parts that quantize a tensor where they meet may have their ranges matched to two tensors)."""
        return list(dict.fromkeys(name for row in self.ranking[:k] for name in row["names"]))

    def emulated(self, ks: int | list[int] | np.ndarray) -> np.ndarray:
        """The emulated output PSNR with the first k left float, for each of `ks` (or one k): linear between
        curve points, up to the last point before nothing is quantized (EXACT_DB is no value to
        interpolate towards)."""
        points = sorted(self.curve)
        finite = [n for n in points if self.curve[n] < EXACT_DB]
        inside = np.interp(ks, finite, [self.curve[n] for n in finite])
        return np.where(np.asarray(ks) >= points[-1], self.curve[points[-1]], inside)

    def predicted(self, gate_db: float, measured: dict[int, float], within: range) -> int | None:
        """The fewest leading tensors left float, in `within`, for which the emulated PSNR reaches
        `gate_db` once corrected by the builds `measured` (k -> the simulator's PSNR): the emulation's
        error at each measured k, linearly in between, the nearest one's outside."""
        known = sorted(measured)
        errors = self.emulated(known) - np.array([measured[k] for k in known])
        ks = np.asarray(within)
        reaching = np.flatnonzero(self.emulated(ks) - np.interp(ks, known, errors) >= gate_db)
        return int(ks[reaching[0]]) if len(reaching) else None


def sparse_points(count: int) -> list[int]:
    """SPARSE counts from 0 to `count`, geometrically spaced (the emulation at full size costs seconds an
    inference: the curve there is read between fewer points)."""
    return sorted({0, count} | {int(k) for k in np.geomspace(1, max(count, 1), SPARSE).round()})


def curve_points(count: int) -> list[int]:
    spread = range(0, count + 1, max(1, count // CURVE_STEPS))
    return sorted(set(range(min(count, DENSE) + 1)) | set(spread) | {count})


def rank(onnx_path: Path, emulation: Emulation, progress: Progress) -> list[Sensitivity]:
    """The emulation's points, costliest first: by gradients, the first VERIFIED by quantizing each alone
    (all of them so, an inference each, in a graph the torch evaluation does not cover)."""
    from converter.common.onnx_torch import Unsupported  # torch: only where gradients are taken
    from converter.mixed_precision import gradient

    progress.note(f"gradients of the output on {len(emulation.feeds)} calibration inputs, "
                  f"{gradient.PROBES} directions each; the first {VERIFIED} quantized alone")
    try:
        estimated = gradient.ranking(onnx_path, emulation.points, emulation.feeds)
    except Unsupported as e:
        progress.note(f"no gradients ({e} not evaluated in torch): each of {len(emulation.points)} tensors "
                      "quantized alone instead")
        return emulation.ranking()
    verified = emulation.alone([s.tensor for s in estimated[:VERIFIED]])
    return sorted(verified + estimated[VERIFIED:], key=lambda s: -s.noise)


def stage(runner: StageRunner, rewritten: Rewritten, ranked_on: Rewritten, calib: Calibration, reference: Reference,
          rknn: Converted) -> Sensitivities:
    """What each tensor the plain build quantized costs at the output, ranked on `ranked_on` (`rewritten` or its
    proxy)."""
    return Sensitivities.read(runner.run(
        "sensitivity", "each quantized tensor's cost at the output, from gradients, with the toolkit's int8 scales",
        {}, [rewritten, ranked_on, calib, reference, rknn],
        lambda tmp: run(rewritten, ranked_on, calib, reference, rknn, runner.progress, tmp)))


def run(passes: Rewritten, ranked_on: Rewritten, calib: Calibration, reference: Reference, rknn: Converted,
        progress: Progress, tmp: Path) -> dict:
    """Rank the tensors of `passes` (the graph the toolkit got) on `ranked_on`: the same graph, or a proxy
    (the same passes at a smaller resolution, fed the build's inputs at every n-th latent pixel; the
    costs carried over by converter/mixed_precision/proxy.py)."""
    from converter.mixed_precision import proxy  # torch: only where a proxy is ranked

    graph = Graph.load(passes.onnx)
    quantized = [q for cfg in rknn.quant_configs for q in quant_config.read(cfg, graph)]
    calibration = read_samples(calib.path)[0]
    checks = [reference.feed(i) for i in range(len(reference.samples))]
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=tmp) as scratch:
        if ranked_on.onnx == passes.onnx:
            emulation = emulate(passes.onnx, quantized, calibration, FEEDS, Path(scratch), progress.note)
            ranking, described = rank(passes.onnx, emulation, progress), None
            ks = curve_points(len(ranking))
        else:
            fit = Fitted(ranked_on.inputs)
            described = fit.describe(calibration[0])
            progress.note(f"ranked at {described}: a proxy of the build's resolution")
            small = [q for cfg in rknn.quant_configs for q in quant_config.read(cfg, Graph.load(ranked_on.onnx))]
            at_proxy = emulate(ranked_on.onnx, small, [fit(f) for f in calibration], FEEDS, Path(scratch) / "proxy",
                               progress.note, proxy=True)
            proxy_ranked = rank(ranked_on.onnx, at_proxy, progress)
            where = proxy.build_points(quantized, graph, at_proxy.points)
            progress.note(f"int8 error of {len(where)} tensors at the build's resolution, "
                          f"{len(at_proxy.feeds)} calibration inputs")
            ranking = proxy.carried(proxy_ranked, proxy.error_power(ranked_on.onnx, at_proxy.points, at_proxy.feeds),
                                    where, proxy.error_power(passes.onnx, where, spread(calibration, FEEDS)))
            emulation = Emulation(passes.onnx, where, [], Path(scratch))
            ks = sparse_points(len(ranking))
        progress.note(f"emulated output on the check inputs, the costliest left float, at {len(ks)} counts")
        curve = emulation.curve(checks, [s.tensor for s in ranking], ks)
    rows = [{"tensor": s.tensor, "names": list(s.names), "alone_db": _finite(s.alone_db)} for s in ranking]
    (tmp / RANKING).write_text(json.dumps({"ranking": rows, "curve": {k: _finite(v) for k, v in curve.items()}}))
    return {"ranking": RANKING, "tensors": len(rows), "feeds": FEEDS,
            "unmatched": len({q.name for q in quantized} - {name for r in rows for name in r["names"]}),
            "proxy": described}


class Fitted:
    """Inputs of the build's graph as inputs of a graph with the shapes `inputs` (name -> {"shape", ...}):
    each smaller axis strided (every n-th latent pixel keeps each pixel's noise level, which pooling
    would shrink by n)."""

    def __init__(self, inputs: dict):
        self.shapes = {name: tuple(spec["shape"]) for name, spec in inputs.items()}

    def strides(self, feed: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        """Input -> its stride per axis, for the inputs `feed` holds larger."""
        found = {}
        for name, value in feed.items():
            want = self.shapes[name]
            if value.shape != want:
                if len(want) != value.ndim or any(h % w for h, w in zip(value.shape, want)):
                    raise BuildFailed(f"input {name} {list(value.shape)} cannot be strided to the ranking "
                                      f"graph's {list(want)}")
                found[name] = tuple(h // w for h, w in zip(value.shape, want))
        return found

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        strides = self.strides(feed)
        return {name: np.ascontiguousarray(value[tuple(slice(None, None, n) for n in strides[name])])
                if name in strides else value for name, value in feed.items()}

    def describe(self, feed: dict[str, np.ndarray]) -> str:
        return ", ".join(f"{name} {list(self.shapes[name])} (every {'x'.join(map(str, n))})"
                         for name, n in self.strides(feed).items())


def _finite(db: float) -> float:
    return db if math.isfinite(db) else EXACT_DB
