"""Does a layer ranking made at a smaller resolution hold at the build's? Both measured on one model.

    .venv/bin/python tools/bench_proxy.py --model demo --resolution 256 --proxy 64
    .venv/bin/python tools/bench_proxy.py --model sd15:mini --resolution 512 --proxy 128 --built 16,64

One plain w8a8 build at --resolution gives the toolkit's quantization. Stage `sensitivity` then ranks its
quantized tensors twice: on the build's own graph (`native`: gradients there, the first 32 quantized
alone), and through the model exported again at --proxy (`proxy`: what `rkconvert build` does past
--hybrid-rank-resolution, converter/mixed_precision/proxy.py). Reported, both orders carried to the build's
tensors by the toolkit names they hold:
- rank correlation (Spearman) of the two, and how many of the first k they share;
- the output PSNR at --resolution, emulated (ONNX Runtime, the toolkit's scales, every tensor matched by
  range), with the first k of either order left float, for each k of --ks; and from real toolkit builds
  for each k of --built;
- wall time of each ranking and the process's peak memory (this machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_build import git_commit, machine  # tools/ is on sys.path when a tool runs as a script


def _carried(rows: list[dict], holder: dict[str, str]) -> list[str]:
    """A ranking's rows as the emulation's tensors (by the toolkit names each row holds), in order, then the
    tensors no row reached."""
    order = list(dict.fromkeys(holder[name] for row in rows for name in row["names"] if name in holder))
    return order + sorted(set(holder.values()) - set(order))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--proxy", type=int, default=64)
    parser.add_argument("--ks", default="8,16,32,64,128")
    parser.add_argument("--built", default="", help="k built by the toolkit for both orders")
    parser.add_argument("--out", type=Path, default=None, help="build folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    ks, built = [int(k) for k in args.ks.split(",")], [int(k) for k in args.built.split(",") if k]
    json_path = args.json or Path("bench-results") / (f"proxy-{args.model.replace(':', '-')}-"
                                                      f"{args.resolution}-{args.proxy}.json")

    from rich.console import Console

    from calib_data.dataset_writer import read_samples
    from converter.builds import builder
    from converter.builds.build_dir import BuildDir, finished_stage
    from converter.builds.request import BuildRequest, HybridSettings
    from converter.builds.stage_run import StageRunner
    from converter.builds.stages import sensitivity as sensitivity_stage
    from converter.builds.stages.rknn import Converted
    from converter.builds.stages.sensitivity import FEEDS
    from converter.common.accuracy import compare
    from converter.common.onnx_graph import Graph
    from converter.common.progress import Progress
    from converter.mixed_precision.sensitivity import emulate
    from converter.models.model_source import resolve
    from converter.toolkit import driver, quant_config
    from converter.toolkit.job import ToolkitJob
    from targets import get_chip

    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        out = args.out or Path(tmp) / "build"
        command = [sys.executable, "-m", "converter.cli", "build", "--target", "rk3588", "--model", args.model,
                   "--resolution", str(args.resolution), "--dtype", "w8a8", "--no-hybrid", "--min-psnr", "0",
                   "--layer-report", "off", "--image-check", "off", "--out", str(out)]
        if subprocess.run(command).returncode:
            return 1
        req = BuildRequest(resolve(args.model), get_chip("rk3588"), out, resolution=args.resolution, dtype="w8a8",
                           hybrid=HybridSettings(rank_resolution=args.proxy))
        runner = StageRunner(BuildDir(out), Progress(Console()))
        plan, exported, rewritten, reference, calib = builder.toolkit_inputs(req, None, runner)
        plain = Converted.read(finished_stage(out, "rknn"))
        timings = {}
        rankings = {}
        for label, graph in (("native", lambda: rewritten),
                             ("proxy", lambda: builder.ranking_graph(plan, exported, rewritten, runner))):
            start = time.monotonic()
            rankings[label] = sensitivity_stage.stage(runner, rewritten, graph(), calib, reference, plain)
            timings[label] = round(time.monotonic() - start, 1)

        graph = Graph.load(rewritten.onnx)
        quantized = [q for cfg in plain.quant_configs for q in quant_config.read(cfg, graph)]
        emulation = emulate(rewritten.onnx, quantized, read_samples(calib.path)[0], FEEDS, Path(tmp) / "scratch")
        holder = {name: p.tensor for p in emulation.points for name in p.names}
        orders = {label: _carried(s.ranking, holder) for label, s in rankings.items()}
        native_order = orders["native"]
        position = {t: i for i, t in enumerate(native_order)}
        spearman = float(np.corrcoef(np.arange(len(orders["proxy"])), [position[t] for t in orders["proxy"]])[0, 1])
        overlap = {k: round(len(set(orders["proxy"][:k]) & set(native_order[:k])) / k, 3) for k in ks}
        checks = [reference.feed(i) for i in range(len(reference.samples))]
        emulated = {label: {k: round(db, 2) for k, db in emulation.curve(checks, order, ks).items()}
                    for label, order in orders.items()}

        names_of = {p.tensor: p.names for p in emulation.points}

        def built_psnr(tensors: list[str]) -> float:
            job = ToolkitJob(rewritten.onnx, "rk3588", tuple(rewritten.input_names), tuple(rewritten.outputs),
                             "w8a8", None, tuple(n for t in tensors for n in names_of[t]), {}, plain.step1[0])
            folder = Path(tempfile.mkdtemp(dir=tmp))
            _, result = driver.build_and_simulate(job, folder, [dict(s) for s in reference.samples], folder / "log")
            sim = np.concatenate([np.load(p).ravel() for outputs in result["outputs"] for p in outputs])
            ref = np.concatenate([np.load(p).ravel() for outputs in reference.outputs for p in outputs.values()])
            return round(compare(sim, ref)["psnr_db"], 2)

        measured = {label: {k: built_psnr(order[:k]) for k in built} for label, order in orders.items()}
        results = {"benchmark": "proxy", "model": args.model, "resolution": args.resolution, "proxy": args.proxy,
                   "machine": machine(), "commit": git_commit(),
                   "plain_psnr_db": round(plain.accuracy(reference)["psnr_db"], 2),
                   "tensors": {label: len(r.ranking) for label, r in rankings.items()},
                   "unmatched": {label: r.unmatched for label, r in rankings.items()},
                   "spearman": round(spearman, 3), "first_k_shared": overlap,
                   "emulated_psnr_db_at_build_resolution": emulated, "built_psnr_db": measured,
                   "own_curve": {label: {k: round(r.curve[k], 2) for k in sorted(r.curve) if k <= max(ks)}
                                 for label, r in rankings.items()},
                   "ranking_seconds": timings,
                   "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("tensors", "spearman", "first_k_shared",
                                              "emulated_psnr_db_at_build_resolution", "built_psnr_db",
                                              "ranking_seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
