"""Orderings of the layers a w8a8 build keeps in float16, compared on one model: emulated and built.

    .venv/bin/python tools/bench_sensitivity.py --model demo [--ks 8,16,32,64,128] [--built 32,64]

One plain w8a8 build (with its per-layer report) gives the toolkit's quantization; then each ordering
keeps its first k tensors float, and its output PSNR on the check inputs is taken from the emulation
(every k of --ks) and from real toolkit builds (every k of --built; step2 from the plain build's step1):
- `measured`: each tensor quantized alone in the emulation, its cost at the model's output;
- `gradient`: rkconvert's (stage sensitivity), the same cost to first order from gradients
  (converter/mixed_precision/gradient.py), its first 32 measured again as `measured` does;
- `local`: each tensor's own quantization error (signal over noise of the tensor itself, the per-layer
  PSNR a per-layer analysis such as the toolkit's accuracy_analysis reports);
- `added-noise`: the per-layer report's noise added per layer in one dump of the plain build (the
  order the hybrid search used before stage sensitivity);
- `named`: TensorRT Model Optimizer's classes kept high-precision by default (time embedding, conv_in,
  conv_out with the norm before it, shortcuts), then the rest as `measured` orders them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_build import git_commit, machine, plain_w8a8  # tools/ is on sys.path when a tool runs as a script

NAMED = ("time_emb", "conv_in", "conv_out", "conv_norm_out", "conv_act", "conv_shortcut", "sample")


def _local_order(onnx_path: Path, points, feed: dict, scratch: Path) -> list[str]:
    import torch

    from converter.common import onnx_runtime
    from converter.mixed_precision.gradient import int8_error

    values = onnx_runtime.run_with_tensors(onnx_path, feed, [p.tensor for p in points if p.tensor not in feed], scratch)
    values.update(feed)

    def sqnr(p) -> float:
        x = torch.from_numpy(values[p.tensor]).double()
        error = int8_error(x, p)
        return float(10 * np.log10(max(float((x * x).sum()), 1e-30) / max(float((error * error).sum()), 1e-30)))

    return [p.tensor for p in sorted(points, key=sqnr)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--ks", default="8,16,32,64,128")
    parser.add_argument("--built", default="32,64", help="k built by the toolkit for every ordering")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    ks, built = [int(k) for k in args.ks.split(",")], [int(k) for k in args.built.split(",") if k]
    json_path = args.json or Path("bench-results") / f"sensitivity-{args.model.replace(':', '-')}.json"

    from rich.console import Console

    from calib_data.dataset_writer import read_samples
    from converter.builds.build_dir import finished_stage
    from converter.builds.stages.layers import LayerRows
    from converter.builds.stages.passes import Rewritten
    from converter.builds.stages.reference import Reference
    from converter.builds.stages.rknn import Converted
    from converter.builds.stages.sensitivity import rank
    from converter.common.onnx_graph import Graph
    from converter.common.progress import Progress
    from converter.mixed_precision.sensitivity import emulate
    from converter.reports.build_report import load_build
    from converter.toolkit import driver, quant_config
    from converter.toolkit.job import ToolkitJob
    from converter.toolkit.naming import named_tensor

    with tempfile.TemporaryDirectory(prefix="bench-sensitivity-") as tmp:
        out = Path(tmp) / "build"
        code = plain_w8a8(args.model, out, layer_report="on")
        if code:
            return code
        report = load_build(out)
        passes = Rewritten.read(finished_stage(out, "passes"))
        reference = Reference.read(finished_stage(out, "reference"))
        plain = Converted.read(finished_stage(out, "rknn"))
        rows = LayerRows.read(finished_stage(out, "layers")).rows
        graph = Graph.load(passes.onnx)
        quantized = [q for cfg in plain.quant_configs for q in quant_config.read(cfg, graph)]
        calibration, _ = read_samples(finished_stage(out, "calib").path)
        emulation = emulate(passes.onnx, quantized, calibration, 4, Path(tmp) / "scratch")
        points = {p.tensor: p for p in emulation.points}
        measured = [s.tensor for s in emulation.ranking()]
        checks = [reference.feed(i) for i in range(len(reference.samples))]

        added = []
        for row in sorted((r for r in rows if r.get("added_noise_db") is not None and r["mapping"] != "unmapped"),
                          key=lambda r: -r["added_noise_db"]):
            holder = next((p.tensor for p in emulation.points if row["layer"] in p.names), None) or \
                named_tensor(row["layer"], graph)
            if holder in points and holder not in added:
                added.append(holder)
        named = [t for t in measured if any(f"/{n}/" in t or t == n for n in NAMED)]
        orderings = {"measured": measured,
                     "gradient": [s.tensor for s in rank(passes.onnx, emulation, Progress(Console()))],
                     "local": _local_order(passes.onnx, emulation.points, calibration[0], Path(tmp) / "local"),
                     "added-noise": added + [t for t in measured if t not in added],
                     "named": named + [t for t in measured if t not in named]}

        def built_psnr(tensors: list[str]) -> float:
            names = [n for t in tensors for n in points[t].names]
            job = ToolkitJob(passes.onnx, "rk3588", tuple(passes.input_names), tuple(passes.outputs), "w8a8",
                             None, tuple(names), {}, plain.step1[0])
            folder = Path(tempfile.mkdtemp(dir=tmp))
            _, result = driver.build_and_simulate(job, folder, [dict(s) for s in reference.samples], folder / "log")
            sim = np.concatenate([np.load(p).ravel() for outputs in result["outputs"] for p in outputs])
            ref = np.concatenate([np.load(p).ravel() for outputs in reference.outputs for p in outputs.values()])
            from converter.common.accuracy import compare
            return compare(sim, ref)["psnr_db"]

        results = {"benchmark": "sensitivity", "model": args.model, "target": "rk3588", "machine": machine(),
                   "commit": git_commit(), "plain_psnr_db": report.psnr_db,
                   "emulated_plain_psnr_db": emulation.curve(checks, [], [0])[0], "tensors": len(measured),
                   "named_tensors": len(named), "orderings": {}}
        for label, order in orderings.items():
            emulated = emulation.curve(checks, order, ks + ([len(named)] if label == "named" else []))
            row = {"emulated_psnr_db": {k: round(db, 2) for k, db in emulated.items()},
                   "built_psnr_db": {k: round(built_psnr(order[:k]), 2) for k in built}, "first": order[:10]}
            if label == "named":
                row["built_psnr_db"][len(named)] = round(built_psnr(named), 2)
            results["orderings"][label] = row
            print(label, row["emulated_psnr_db"], row["built_psnr_db"], flush=True)
        spearman = {}
        rank = {t: i for i, t in enumerate(measured)}
        for label, order in orderings.items():
            other = np.array([rank[t] for t in order], np.float64)
            spearman[label] = round(float(np.corrcoef(np.arange(len(order)), other)[0, 1]), 3)
        results["rank_correlation_with_measured"] = spearman
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("plain_psnr_db", "emulated_plain_psnr_db",
                                              "rank_correlation_with_measured")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
