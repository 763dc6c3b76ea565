"""Whether the .rknn of several sizes can share one weight set: the toolkit's remove_weight, on this machine.

    .venv/bin/python tools/bench_weight_sharing.py --build build/demo-rk3588 [--json bench-results/weight-sharing-demo.json]

--build is a folder built at several sizes (`rkconvert build --resolution A,B`). The same UNet graph is one
.rknn per size, each with its own copy of the weights. rknn-toolkit2's config(remove_weight=True) builds a
"slave" .rknn without the conv weights, which the board's C runtime can run by sharing the weight memory of a
"master" built whole (rknn_init with RKNN_FLAG_SHARE_WEIGHT_MEM). This builds every size but the first again
with remove_weight=True, in the toolkit's child process as a build does, and records: the bytes of each .rknn
whole and as a slave, what the slave's file declares, and whether the simulator runs it (its output on the
build's check input against the whole build's).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench_build import git_commit, machine  # tools/ is on sys.path as a script's folder

from converter.builds.finished import FinishedBuild
from converter.common.errors import BuildFailed
from converter.reports.build_report import SizesIndex, load
from converter.toolkit import driver, rknn_file


def slave(build: FinishedBuild, scratch: Path) -> dict:
    """The size's UNet built again with remove_weight=True, and simulated on its check input."""
    (job,) = build.model().jobs
    job = replace(job, options={**job.options, "remove_weight": True})
    out = scratch / "slave"
    try:
        _, result = driver.build_and_simulate(job, out, [build.reference.samples[0]], scratch / "rknn.log")
    except BuildFailed as e:
        return {"built": False, "error": str(e)}
    declared = rknn_file.read(out / driver.RKNN_NAME).to_json()
    entry = {"built": True, "bytes": (out / driver.RKNN_NAME).stat().st_size,
             "constant_bytes": declared["constant_bytes"]}
    whole = np.load(build.rknn.simulator[0][0])
    simulated = np.load(result["outputs"][0][0]) if result.get("outputs") else None
    entry["simulator_max_abs_vs_whole"] = None if simulated is None else float(np.abs(simulated - whole).max())
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    index = load(args.build)
    if not isinstance(index, SizesIndex):
        sys.exit(f"{args.build}: not a build of several sizes (rkconvert build --resolution A,B)")
    rows = []
    for size, entry in index.sizes.items():
        build = FinishedBuild.open(args.build / entry.folder)
        (artifact,) = build.artifacts
        row = {"size": int(size), "bytes": artifact.stat().st_size,
               "constant_bytes": rknn_file.read(artifact).constant_bytes}
        if rows:
            with tempfile.TemporaryDirectory(prefix="bench-weight-sharing-") as scratch:
                row["remove_weight"] = slave(build, Path(scratch))
        rows.append(row)
        print(json.dumps(row), flush=True)
    whole = sum(r["bytes"] for r in rows)
    shared = rows[0]["bytes"] + sum(r["remove_weight"].get("bytes", r["bytes"]) for r in rows[1:])
    result = {"machine": machine(), "commit": git_commit(), "build": str(args.build), "sizes": rows,
              "bytes_each_whole": whole, "bytes_first_whole_others_slaves": shared}
    print(json.dumps({k: v for k, v in result.items() if k != "sizes"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
