"""w8a8 on rk3588, side by side: the toolkit's range algorithms x three ways to mix in float16. JSON and a table.

    .venv/bin/python tools/bench_quantized.py --model demo
    .venv/bin/python tools/bench_quantized.py --model sd15 --resolution 512 --algorithms normal \
        --methods plain,rkconvert

Rows: --algorithms (the toolkit's quantized_algorithm: normal, mmse, kl_divergence) x --methods:
- plain: every layer int8 (--no-hybrid);
- toolkit: the toolkit's own build(auto_hybrid=True), layers under --toolkit-cos to float16;
- rkconvert: the measured search (stage sensitivity) under --min-psnr (default: that algorithm's plain
  build + --gain dB; the plain row is built first).
Columns: float16 share of the compiled layers and of the toolkit's estimated cycles, the estimated cycles
against the float16 build's (estimates from the compiler's table, attention left out: not a board
measurement), output PSNR against ONNX Runtime on the held-out check inputs, for a model that draws its
images against the float16 build's images (PSNR mean and min) and prompt accuracy, the .rknn's size, wall
time and the process tree's peak memory (this machine; every row built from scratch).
--diagnose-psnr DB runs `rkconvert diagnose` on each rkconvert row's folder under that gate (its stages
reused): its time, peak and the layer it names.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_build import git_commit, machine, timed, timed_build  # tools/ is on sys.path when a tool runs as a script

from converter.reports.build_report import BuildReport

METHODS = ("plain", "toolkit", "rkconvert")


def _images(out: Path, report: BuildReport | None) -> dict[str, Path]:
    """Prompt -> the build's own (.rknn) image."""
    images = report and report.images
    if not images:
        return {}
    folder = out / images.grid.rsplit("/", 1)[0]
    return {r["prompt"]: folder / r["rknn"] for r in images.rows}


def _against(images: dict[str, Path], float16: dict[str, Path]) -> dict | None:
    """Image PSNR of a build's images against the float16 build's, mean and min."""
    if not images or not float16:
        return None
    from PIL import Image

    from converter.imaging.evaluation import psnr

    values = [psnr(np.asarray(Image.open(images[p]).convert("RGB")), np.asarray(Image.open(float16[p]).convert("RGB")))
              for p in images]
    return {"psnr_db_mean": round(float(np.mean(values)), 2), "psnr_db_min": round(float(np.min(values)), 2)}


def _row(run: dict, out: Path, float16: dict[str, Path], float16_cycles: int | None) -> dict:
    report: BuildReport | None = run["report"]
    if report is None:
        return {"exit_code": run["exit_code"], "error": None, "wall_seconds": run["wall_seconds"],
                "peak_rss_bytes": run["peak_rss_bytes"]}
    layers_share, cycles_share = report.float16_share
    cycles = report.estimated_cycles
    return {"exit_code": run["exit_code"], "error": report.error,
            "float16_layers_share": layers_share, "float16_cycles_share_estimated": cycles_share,
            "cycles_vs_float16_estimated": round(cycles / float16_cycles, 4) if cycles and float16_cycles else None,
            "output_psnr_db": report.psnr_db,
            "images_vs_float16": _against(_images(out, report), float16),
            "prompt_accuracy": report.images.rknn_prompt_accuracy if report.images else None,
            "artifact_bytes": report.delivered.artifact_bytes if report.delivered else None,
            "hybrid_kept": report.hybrid_kept, "hybrid_trials": len(report.hybrid_trials or []),
            "wall_seconds": run["wall_seconds"], "peak_rss_bytes": run["peak_rss_bytes"],
            # each process's own max RSS (getrusage): a spike shorter than the tree sampler's 0.5 s shows here
            "peak_rss_bytes_by_process": report.peak_rss_bytes,
            "stages": [(s["name"], round(s.get("seconds", 0), 1)) for s in report.stages or []]}


def _diagnosed(args: list[str], out: Path) -> dict:
    """`rkconvert diagnose ARGS --out out` on a build's folder (its stages reused), timed, and what it found."""
    run = timed(["diagnose", *args, "--out", str(out)])
    found = out / "diagnosis" / "diagnosis.json"
    diagnosis = json.loads(found.read_text()) if found.exists() else {}
    return {**run, "failure": diagnosis.get("failure"), "departure": diagnosis.get("departure")}


def _table(results: dict) -> str:
    """The rows as a Markdown table."""
    def pct(v):
        return "—" if v is None else f"{v:.1%}"

    def db(v):
        return "—" if v is None else f"{v:.1f} dB"

    lines = ["| algorithm | method | float16 layers | float16 cycles (est.) | cycles vs float16 build (est.) | "
             "output PSNR | images vs float16 (mean / min) | prompt acc. | .rknn | wall |", "|---" * 10 + "|"]
    for name, row in results["rows"].items():
        algorithm, method = name.split("/")
        images = row["images_vs_float16"]
        shown = f"{images['psnr_db_mean']:.1f} / {images['psnr_db_min']:.1f} dB" if images else "—"
        size = "—" if row["artifact_bytes"] is None else f"{row['artifact_bytes'] / 2**20:.1f} MiB"
        lines.append(f"| {algorithm} | {method} | {pct(row['float16_layers_share'])} | "
                     f"{pct(row['float16_cycles_share_estimated'])} | {pct(row['cycles_vs_float16_estimated'])} | "
                     f"{db(row['output_psnr_db'])} | {shown} | "
                     f"{pct(row['prompt_accuracy'])} | {size} | {row['wall_seconds']:.0f} s |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--algorithms", default="normal,mmse,kl_divergence")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--min-psnr", type=float, default=None, help="rkconvert's gate (default: plain + --gain)")
    parser.add_argument("--gain", type=float, default=6.0)
    parser.add_argument("--toolkit-cos", type=float, default=0.98, help="the toolkit's auto_hybrid_cos_thresh")
    parser.add_argument("--diagnose-psnr", type=float, default=None, metavar="DB",
                        help="after each rkconvert row, `rkconvert diagnose` its folder under this gate (e.g. one "
                             "it cannot reach): its time, peak memory and the departure it names")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    methods = args.methods.split(",")
    if "rkconvert" in methods and "plain" not in methods and args.min_psnr is None:
        parser.error("the rkconvert method without the plain one needs --min-psnr")
    resolution = ["--resolution", str(args.resolution)] if args.resolution else []
    json_path = args.json or Path("bench-results") / f"quantized-{args.model.replace(':', '-')}.json"
    model = ["--target", "rk3588", "--model", args.model, *resolution]

    results = {"benchmark": "quantized", "model": args.model, "resolution": args.resolution, "target": "rk3588",
               "machine": machine(), "commit": git_commit(), "rows": {}}
    with tempfile.TemporaryDirectory(prefix="bench-quantized-") as tmp:
        out = Path(tmp) / "float16"
        run = timed_build([*model, "--dtype", "float16", "--min-psnr", "0", "--layer-report", "off"], out)
        report = run["report"]
        float16 = _images(out, report)
        float16_cycles = report.estimated_cycles
        results["float16"] = {"output_psnr_db": report.psnr_db, "artifact_bytes": report.delivered.artifact_bytes,
                              "total_cycles_estimated": float16_cycles}
        for algorithm in args.algorithms.split(","):
            toolkit = [*model, "--dtype", "w8a8", "--quant-algorithm", algorithm]  # what diagnose takes too
            quantized = [*toolkit, "--layer-report", "off"]
            plain_psnr = None
            for method in methods:
                extra = {"plain": ["--no-hybrid", "--min-psnr", "0"],
                         "toolkit": ["--toolkit-auto-hybrid", str(args.toolkit_cos), "--min-psnr", "0"],
                         "rkconvert": ["--min-psnr", str(args.min_psnr or (plain_psnr or 0) + args.gain)]}[method]
                out = Path(tmp) / f"{algorithm}-{method}"
                run = timed_build([*quantized, *extra], out)
                row = _row(run, out, float16, float16_cycles)
                if method == "plain":
                    plain_psnr = row["output_psnr_db"]
                if method == "rkconvert":
                    row["min_psnr"] = float(extra[1])
                    if args.diagnose_psnr is not None:
                        row["diagnose"] = _diagnosed([*toolkit, "--min-psnr", str(args.diagnose_psnr)], out)
                results["rows"][f"{algorithm}/{method}"] = row
                shown = {k: v for k, v in row.items() if k != "stages"}
                print(f"{algorithm}/{method}: {json.dumps(shown)}", flush=True)
    results["table"] = _table(results)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(results["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
