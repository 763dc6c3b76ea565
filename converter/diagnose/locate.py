"""Where an accuracy failure starts, and a subgraph around it that loses the accuracy on its own.

The reduction (reduce.py) does not fit accuracy: every candidate is a build plus a simulator run, and
node-by-node reduction of the tiny UNet's 870 nodes would take ~50 min (measured with Polygraphy's:
bisection got 870 -> 389 nodes in 68 s, then ~8 s a node). The per-layer report already says where the
.rknn leaves ONNX Runtime: the first layer, in the toolkit's execution order, whose toolkit float run
('golden') already disagrees with ONNX Runtime (a rewrite that changed what the graph computes) or that
adds more noise than the gate allows (quantization or float16 precision). From that layer's ONNX nodes
the subgraph grows ring by ring downstream until a candidate fails the gate standalone: a toolkit
fusion often spans the layer and what follows it (onnxsim's fused q/k/v MatMul comes out wrong only
with the attention after it, which the toolkit fuses into one exSDPAttention).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from converter.diagnose import subgraph
from converter.diagnose.subgraph import Cutter
from converter.reports.layer_report import GOLDEN_FAITHFUL_COS, worst_first

MAX_RINGS = 12
CAUSES = {
    "rewrite": "the toolkit's own float run differs from ONNX Runtime here too: one of its rewrites changed "
               "what the graph computes (keeping layers in float16 cannot help; a graph pass that avoids the "
               "pattern can)",
    "precision": "the toolkit's float run agrees with ONNX Runtime, the simulator does not: quantization or "
                 "float16 noise (keeping this layer in float16, e.g. build --hybrid, can help)",
}


def departure(rows: list[dict], min_psnr: float) -> dict | None:
    """The first layer row (execution order) that departs from ONNX Runtime: golden cosine under
    GOLDEN_FAITHFUL_COS, or noise added above -`min_psnr` dB of its signal (alone it would fail the
    gate). When none does, the errors of several layers add up: the one adding the most noise."""
    mapped = [r for r in rows if r["mapping"] != "unmapped" and r["op"] != "Input"]
    for row in mapped:
        added = row.get("added_noise_db")
        if row["golden_cosine"] < GOLDEN_FAITHFUL_COS or (added is not None and added > -min_psnr):
            return row
    return worst_first(mapped)[0] if mapped else None


def cause(row: dict) -> str:
    return "rewrite" if row["golden_cosine"] < GOLDEN_FAITHFUL_COS else "precision"


@dataclass(frozen=True)
class Neighbourhood:
    rings: int
    nodes_before: int
    nodes_after: int
    builds: int
    seconds: float


def _ring(cutter: Cutter, kept: set[int]) -> set[int]:
    """`kept` and the nodes that consume their outputs."""
    return kept | {c for i in kept for o in cutter.nodes[i].output if o for c in cutter.consumers.get(o, ())}


def grow(cutter: Cutter, seed: list[str], fails: Callable[[Path], bool], out: Path,
         on_note: Callable[[str], None] | None = None) -> Neighbourhood:
    """The smallest ring around the nodes named `seed` (0: the seed alone, then each ring adding the nodes
    that consume the last one's outputs) whose subgraph `fails` standalone, written to `out`; the largest
    tried is left there when none does within MAX_RINGS."""
    start = time.monotonic()
    kept, builds, nodes, last = cutter.index(seed), 0, 0, None
    for rings in range(MAX_RINGS + 1):
        if rings:
            kept = _ring(cutter, kept)
        if kept == last:
            break  # nothing downstream left to add
        last = set(kept)
        model = cutter.cut(kept)
        if model is None:
            continue  # hands nothing on yet
        nodes = len(model.graph.node)
        subgraph.save(model, out)
        builds += 1
        if on_note:
            on_note(f"{rings} rings: {nodes} nodes")
        if fails(out):
            break
    return Neighbourhood(rings, len(cutter), nodes, builds, round(time.monotonic() - start, 1))
