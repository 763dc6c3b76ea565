"""Where an accuracy failure starts, and a subgraph around it that loses the accuracy on its own.

Polygraphy's reduction does not fit accuracy: every candidate is a build plus a simulator run, and
node-by-node reduction of the tiny UNet's 870 nodes would take ~50 min (measured: bisection got
870 -> 389 nodes in 68 s, then ~8 s a node). The per-layer report already says where the .rknn leaves
ONNX Runtime: the first layer, in the toolkit's execution order, whose toolkit float run ('golden')
already disagrees with ONNX Runtime (a rewrite that changed what the graph computes) or that adds
more noise than the gate allows (quantization or float16 precision). From that layer's ONNX nodes
the subgraph grows ring by ring downstream until a candidate fails the gate standalone: a toolkit
fusion often spans the layer and what follows it (onnxsim's fused q/k/v MatMul comes out wrong only
with the attention after it, which the toolkit fuses into one exSDPAttention).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx
from onnx.utils import Extractor

from converter.common.onnx_graph import Graph
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


def _ring(graph: Graph, names: set[str]) -> set[str]:
    """`names` and the nodes that consume their outputs."""
    return names | {c.name for n in graph.model.graph.node if n.name in names for o in n.output
                    for c in graph.consumers.get(o, [])}


def _boundary(graph: Graph, names: set[str]) -> tuple[list[str], list[str]]:
    """The subgraph's inputs (tensors from outside, constants aside) and outputs (tensors leaving it)."""
    given = {i.name for i in graph.model.graph.initializer} | {o.name for o in graph.model.graph.output}
    inside = [n for n in graph.model.graph.node if n.name in names]
    produced = {o for n in inside for o in n.output}
    inputs = [i for n in inside for i in n.input
              if i and i not in produced and i not in given
              and not (i in graph.producer and graph.producer[i].op_type == "Constant")]
    outputs = [o for n in inside for o in n.output
               if o in given or any(c.name not in names for c in graph.consumers.get(o, []))]
    return list(dict.fromkeys(inputs)), outputs


def _extract(cutter: Extractor, weights_dir: Path, inputs: list[str], outputs: list[str], out: Path) -> int:
    """The subgraph from `inputs` to `outputs` into `out` with its weights inline; its node count. The
    graph is cut without weights (a 3.4 GB UNet stays on disk), then the kept ones are read."""
    sub = cutter.extract_model(inputs, outputs)
    onnx.load_external_data_for_model(sub, str(weights_dir))
    onnx.save(sub, str(out))
    return len(sub.graph.node)


def grow(source: Path, seed: list[str], fails: Callable[[Path], bool], out: Path,
         on_note: Callable[[str], None] | None = None) -> Neighbourhood:
    """The smallest ring around the `seed` nodes (0: the seed alone, then each ring adding the nodes that
    consume the last one's outputs) whose subgraph `fails` standalone, written to `out`; the largest tried
    is left there when none does within MAX_RINGS."""
    start = time.monotonic()
    graph = Graph.load(source)
    # Extractor needs the value_info of every tensor it cuts at: shapes inferred once for all rings.
    cutter = Extractor(onnx.shape_inference.infer_shapes(graph.model))
    names, builds, nodes, last = set(seed), 0, 0, None
    for rings in range(MAX_RINGS + 1):
        if rings:
            names = _ring(graph, names)
        if names == last:
            break  # nothing downstream left to add
        last = set(names)
        nodes = _extract(cutter, source.parent, *_boundary(graph, names), out)
        builds += 1
        if on_note:
            on_note(f"{rings} rings: {nodes} nodes")
        if fails(out):
            break
    return Neighbourhood(rings, len(graph.model.graph.node), nodes, builds, round(time.monotonic() - start, 1))
