"""The toolkit's quantized_algorithm at full size: one part of a w8a8 build in parts, built with each algorithm.

    .venv/bin/rkconvert build --target rk3588 --model sd15 --resolution 512 --dtype w8a8 --no-hybrid --out B
    .venv/bin/python tools/bench_quant_algorithm.py --build B --part 1 --algorithms normal,mmse --json J

Reads the build's `split` and `split-calib` stages (the part's ONNX and its calibration set; the build may be
stopped once they exist) and runs the toolkit on that part as the build does (hybrid step1 + step2 + the
simulator, in a child process) once per algorithm, one at a time: wall time, the toolkit's phases and each
phase's peak memory. What `--quant-algorithm auto` decides by (converter/builds/plan.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench_build import git_commit, machine  # tools/ is on sys.path when a tool runs as a script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from converter.toolkit import driver  # noqa: E402
from converter.toolkit.job import ToolkitJob  # noqa: E402


def _part(stages: Path, part: int) -> tuple[dict, Path]:
    split = json.loads((stages / "split" / "stage.json").read_text())["meta"]
    calib = json.loads((stages / "split-calib" / "stage.json").read_text())["meta"]
    if not 1 <= part <= len(split["parts"]):
        raise SystemExit(f"--part {part}: the build has {len(split['parts'])} parts")
    return split["parts"][part - 1], stages / "split-calib" / calib["datasets"][part - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, required=True, help="a w8a8 build folder in parts")
    parser.add_argument("--part", type=int, default=1)
    parser.add_argument("--algorithms", default="normal,mmse")
    parser.add_argument("--target", default="rk3588")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    stages = args.build / "stages"
    if not (stages / "split-calib" / "stage.json").is_file():
        raise SystemExit(f"{args.build}: no split-calib stage (a w8a8 build in parts makes one)")
    spec, dataset = _part(stages, args.part)
    rows = []
    for algorithm in args.algorithms.split(","):
        job = ToolkitJob(stages / "split" / spec["onnx"], args.target, tuple(spec["inputs"]), tuple(spec["outputs"]),
                         "w8a8", dataset, (), {"quantized_algorithm": algorithm})
        with tempfile.TemporaryDirectory() as scratch:
            start = time.monotonic()
            _, result = driver.build_and_simulate(job, Path(scratch), [], Path(scratch) / "toolkit.log")
            rows.append({"algorithm": algorithm, "wall_seconds": round(time.monotonic() - start, 1),
                         "phases": result["phases"], "phase_peak_rss_bytes": result["phase_peak_rss_bytes"]})
        print(json.dumps(rows[-1]), flush=True)
    report = {"benchmark": "quant_algorithm", "build": str(args.build), "part": args.part,
              "part_weight_bytes": spec["weight_bytes"], "machine": machine(), "commit": git_commit(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
