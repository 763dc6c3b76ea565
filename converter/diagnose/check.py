"""The pass/fail check `polygraphy debug reduce` runs on every candidate subgraph.

    python -m converter.diagnose.check PROBE.json WANTED.json CANDIDATE.onnx

Exit 1 when the candidate fails the way WANTED.json (a Failure) says, 0 when it builds or fails some
other way: a reduction must keep the failure it was asked about, not drift to another one.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from converter.diagnose import probe
from converter.toolkit.failure import Failure


def main(probe_json: str, wanted_json: str, candidate: str) -> int:
    folder = Path(probe_json).parent
    wanted = Failure.from_json(json.loads(Path(wanted_json).read_text()))
    with tempfile.TemporaryDirectory(prefix="candidate-", dir=folder) as scratch:
        failure = probe.run(Path(candidate), probe.Probe.load(Path(probe_json)), Path(scratch))
    same = failure is not None and failure.same_way(wanted)
    print(f"{failure.describe() if failure else 'built'} -> "
          f"{'fails the same way' if same else 'does not reproduce'}", flush=True)
    return 1 if same else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
