"""A timed `rkconvert fuzz` campaign: graphs tried, distinct toolkit failures, and whether diagnose ended each
failure with a diagnosis of its own, as JSON.

    .venv/bin/python tools/bench_fuzz.py [--minutes 30] [--dtype float16 --dtype w8a8]
                                         [--json bench-results/fuzz-rk3588.json]

The graphs tried in a given time depend on the machine (each build is a toolkit process): the JSON records which.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_build import git_commit, machine  # tools/ is on sys.path when a tool runs as a script


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="rk3588")
    parser.add_argument("--dtype", action="append", default=None)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="the campaign's folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=Path("bench-results/fuzz-rk3588.json"))
    args = parser.parse_args()
    dtypes = args.dtype or ["float16", "w8a8"]
    with tempfile.TemporaryDirectory(prefix="fuzz-") as scratch:
        out = args.out or Path(scratch)
        command = [sys.executable, "-m", "converter.cli", "fuzz", "--target", args.target, "--minutes",
                   str(args.minutes), "--first-seed", str(args.first_seed), "--out", str(out)]
        command += [f"--dtype={d}" for d in dtypes]
        exit_code = subprocess.run(command).returncode
        summary = json.loads((out / "summary.json").read_text())
    result = {"command": " ".join(command[1:]), "exit_code": exit_code, "machine": machine(), "commit": git_commit(),
              **summary}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.json}: {summary['graphs']} graphs, {summary['failures']} distinct failures, "
          f"{summary['diagnosed']} diagnosed, {summary['diagnose_errors']} diagnose errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
