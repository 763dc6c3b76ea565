"""Read what rknn-toolkit2's `accuracy_analysis` leaves in its output folder (format of 2.5.0).

- `error_analysis.txt`: one row per layer in execution order, `[OpType] tensor_name` then the
  toolkit's own errors against its 'golden' run: entire cos | euc, single cos | euc.
- `map_name_to_file.txt`: tensor name -> dump file name.
- `golden/*.txt`, `simulator/*.txt`: each layer's output as text, one value per line ("%.6f"),
  no shape; 4-D tensors come in NCHW order for the layers checked so far, others vary.

'golden' is the toolkit's float run of its *already rewritten* graph, so its errors cannot show a
rewrite that changed the computation; only a comparison with ONNX Runtime can.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_ROW = re.compile(r"^\[(?P<op>[^\]]+)\]\s+(?P<name>\S+)\s+(?P<ecos>[-\w.]+)\s*\|\s*(?P<eeuc>[-\w.]+)"
                  r"\s+(?P<scos>[-\w.]+)\s*\|\s*(?P<seuc>[-\w.]+)\s*$")


@dataclass(frozen=True)
class SnapshotLayer:
    index: int
    op: str
    name: str
    file: str
    entire_cos: float
    entire_euc: float
    single_cos: float
    single_euc: float


def read_layers(snapshot: Path) -> list[SnapshotLayer]:
    files = {}
    for line in (snapshot / "map_name_to_file.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].endswith(".txt"):
            files[parts[0]] = parts[1]
    layers = []
    for line in (snapshot / "error_analysis.txt").read_text().splitlines():
        m = _ROW.match(line.strip())
        if m and m["name"] in files:
            layers.append(SnapshotLayer(len(layers), m["op"], m["name"], files[m["name"]],
                                        float(m["ecos"]), float(m["eeuc"]), float(m["scos"]), float(m["seuc"])))
    return layers


def load_dump(snapshot: Path, run: str, layer: SnapshotLayer) -> np.ndarray:
    """Flat float32 values of `layer` from run 'golden' or 'simulator'."""
    return np.fromfile(snapshot / run / layer.file, dtype=np.float32, sep=" ")
