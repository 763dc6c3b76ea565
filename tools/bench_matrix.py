"""Benchmark `rkconvert matrix`: one matrix of miniature presets, built locally (one at a time) and on a
Ray cluster of this machine alone (started here on the loopback address, --workers CPUs), as JSON.

    .venv/bin/python tools/bench_matrix.py [--workers 2] [--json bench-results/matrix-mini.json]

Both runs start from empty build folders. Figures depend on the machine: the JSON records which one.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_build import git_commit, machine  # tools/ is on sys.path when a tool runs as a script

MATRIX = """
[defaults]
resolution = 64
layer-report = "off"

[axes]
model = ["sd15:mini", "bk-sdm-tiny:mini"]
target = ["rk3588", "rk3576"]
dtype = ["float16"]
"""
RAY = str(Path(sys.executable).parent / "ray")


def timed_matrix(folder: Path, out: str, *extra: str) -> dict:
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "converter.cli", "matrix", "matrix.toml", "--out", out, *extra],
                         cwd=folder, capture_output=True, text=True)
    wall = round(time.monotonic() - start, 1)
    summary = json.loads((folder / out / "summary.json").read_text())
    return {"exit_code": run.returncode, "wall_seconds": wall,
            "entries": {r["entry"]: {"status": r["status"], "seconds": r["seconds"]} for r in summary["entries"]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray cluster (builds at once)")
    parser.add_argument("--json", type=Path, default=Path("bench-results") / "matrix-mini.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-matrix-") as tmp:
        folder = Path(tmp)
        (folder / "matrix.toml").write_text(MATRIX)
        local = timed_matrix(folder, "local")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                        f"--num-cpus={args.workers}", "--object-store-memory=100000000", "--include-dashboard=false",
                        "--disable-usage-stats"], check=True, capture_output=True)
        try:
            ray = timed_matrix(folder, "ray", "--ray", f"127.0.0.1:{port}")
        finally:
            subprocess.run([RAY, "stop", "--force"], capture_output=True)
    result = {"benchmark": "matrix", "matrix": MATRIX, "ray_workers": args.workers, "local": local, "ray": ray,
              "ray_over_local_wall": round(ray["wall_seconds"] / local["wall_seconds"], 3),
              "rkconvert_commit": git_commit(), "machine": machine()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ray_workers", "ray_over_local_wall")} |
                     {"local_s": local["wall_seconds"], "ray_s": ray["wall_seconds"]}))
    print(f"wrote {args.json}")
    return 0 if local["exit_code"] == ray["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
