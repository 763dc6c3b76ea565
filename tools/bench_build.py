"""Benchmark `rkconvert build` on a preset (or any --model, such as an .onnx graph): wall time, peak memory,
accuracy and size, as JSON.

    .venv/bin/python tools/bench_build.py --model sd15 --resolution 512 [--parts 1] [--baseline bare]
        [--json bench-results/x.json]

Runs the real CLI in a child process (fresh build folder, --rebuild) and samples the resident memory
of its whole process tree (rkconvert + the toolkit's child) twice a second, so the peak is what the
machine had to hold. Figures depend on the machine: the JSON records which one.

`--baseline bare` also builds, in the same run and one after the other, what rknn-toolkit2 used bare
makes of the model: the export with only the time projection cut (without it every diffusers UNet kills
the toolkit), built whole and untiled, no other rewrite (`--passes host_time_projection --parts 1
--attention-tiles off`). Both go through the same export and ONNX Runtime reference, so the ratios
compare the toolkit's share: rkconvert's passes, tiling and parts against none of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from converter.reports.build_report import BuildReport, load_build


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def timed(args: list[str]) -> dict:
    """`rkconvert ARGS` in a child: exit code, wall seconds and the process tree's peak RSS (sampled every
    0.5 s)."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "converter.cli", *args])
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.5)
    return {"exit_code": proc.returncode, "wall_seconds": round(time.monotonic() - start, 1), "peak_rss_bytes": peak}


def timed_build(build_args: list[str], out: Path) -> dict:
    """`rkconvert build ... --out out --rebuild`, timed, and the build's report (None if it wrote none)."""
    run = timed(["build", *build_args, "--out", str(out), "--rebuild"])
    return {**run, "report": load_build(out) if (out / "report.json").exists() else None}


# rknn-toolkit2 used bare: only the cut without which it dies (host_time_projection), whole and untiled.
BARE = ["--passes", "host_time_projection", "--parts", "1", "--attention-tiles", "off"]


def figures(run: dict) -> dict:
    """What a benchmark row records of one timed build."""
    report: BuildReport | None = run["report"]
    row = {"exit_code": run["exit_code"], "wall_seconds": run["wall_seconds"], "peak_rss_bytes": run["peak_rss_bytes"]}
    if report is None:
        return {"parts_built": None, **row}
    accuracy, delivered = report.accuracy, report.delivered
    return {
        "parts_built": len(report.artifacts) or 1,
        **row,
        "peak_rss_bytes_by_process": report.peak_rss_bytes,
        "stages": report.stages,
        "toolkit_phases": report.toolkit_phases,
        "toolkit_phase_peak_rss_bytes": report.toolkit_phase_peak_rss_bytes,
        "output_psnr_db": accuracy and accuracy.psnr_db,
        "output_cosine": accuracy and accuracy.cosine,
        "output_max_abs": accuracy and accuracy.max_abs,
        "artifact_bytes": delivered and delivered.artifact_bytes,
        "onnx_bytes": report.onnx_bytes,
        "cpu_ops": report.cpu_ops,
        "passes": report.passes,
        # a model that draws: its text encoder's and VAE decoder's builds
        "npu_models": {name: vars(entry) for name, entry in report.npu_models.items()} if report.npu_models else None,
        "error": report.error,
        "toolkit_version": report.toolkit_version,
    }


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": psutil.virtual_memory().total,
            "python": platform.python_version()}


def plain_w8a8(model: str, out: Path, layer_report: str = "off") -> int:
    """`rkconvert build` of `model` as w8a8 with no gate and no image check, into `out`: the toolkit's own
    quantization (stages passes, calib, rknn with its step1 config) for a bench to read; its exit code."""
    return subprocess.run([sys.executable, "-m", "converter.cli", "build", "--target", "rk3588", "--model", model,
                           "--dtype", "w8a8", "--min-psnr", "0", "--layer-report", layer_report, "--image-check", "off",
                           "--out", str(out)]).returncode


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd15")
    parser.add_argument("--resolution", type=int, default=512, help="pixels (not for an .onnx: its shapes are fixed)")
    parser.add_argument("--target", default="rk3588")
    parser.add_argument("--enable-pass", action="append", default=[], help="passed on to rkconvert build")
    parser.add_argument("--layer-report", default="off", help="passed on to rkconvert build (default: off)")
    parser.add_argument("--attention-tiles", default="auto", help="passed on to rkconvert build (default: auto)")
    parser.add_argument("--parts", default="auto", help="passed on to rkconvert build (default: auto)")
    parser.add_argument("--baseline", choices=["bare"], default=None,
                        help="also build the toolkit's bare baseline in the same run (see above)")
    parser.add_argument("--out", type=Path, default=None, help="build folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="default: bench-results/build-<model>-<res>.json")
    args = parser.parse_args()
    variant = "".join(f"+{p}" for p in args.enable_pass) + ("" if args.attention_tiles == "auto" else
                                                            f"+tiles-{args.attention_tiles}")
    variant += "" if args.parts == "auto" else f"+parts-{args.parts}"
    onnx_file = args.model.endswith(".onnx")
    name = Path(args.model).stem if onnx_file else f"{args.model.replace(':', '-')}-{args.resolution}"
    json_path = args.json or Path("bench-results") / f"build-{name}{variant}.json"

    common = ["--target", args.target, "--model", args.model, "--layer-report", args.layer_report,
              *([] if onnx_file else ["--resolution", str(args.resolution)])]
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        out = args.out or Path(tmp) / "build"
        run = timed_build([*common, "--attention-tiles", args.attention_tiles, "--parts", str(args.parts),
                           *(f"--enable-pass={p}" for p in args.enable_pass)], out)
        baseline = timed_build([*common, *BARE], out.with_name(f"{out.name}-bare")) if args.baseline else None

    result = {
        "benchmark": "build",
        "model": args.model,
        "resolution": None if onnx_file else args.resolution,
        "target": args.target,
        "enabled_passes": args.enable_pass,
        "attention_tiles": args.attention_tiles,
        "parts": args.parts,
        **figures(run),
        "rkconvert_commit": git_commit(),
        "machine": machine(),
    }
    if baseline:
        result["baseline"] = {"kind": "bare", "options": BARE, **figures(baseline)}
        result["versus_baseline"] = {
            "wall_seconds": round(run["wall_seconds"] / baseline["wall_seconds"], 3),
            "peak_rss_bytes": round(run["peak_rss_bytes"] / baseline["peak_rss_bytes"], 3),
            "output_psnr_db": (None if None in (result["output_psnr_db"], result["baseline"]["output_psnr_db"])
                               else round(result["output_psnr_db"] - result["baseline"]["output_psnr_db"], 2))}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_seconds", "peak_rss_bytes", "output_psnr_db", "artifact_bytes")}))
    if baseline:
        print(json.dumps({"versus_baseline": result["versus_baseline"]}))
    print(f"wrote {json_path}")
    return run["exit_code"] or (baseline or {}).get("exit_code", 0)


if __name__ == "__main__":
    sys.exit(main())
