"""Where a quantized build's accuracy failure starts when no layer can be dumped: SD 1.5 at 512 px is built
in parts (the per-layer report maps a graph built whole) and its dumps would be tens of GiB of text.

Stage sensitivity already measures, with the toolkit's own int8 scales, what quantizing each tensor alone
costs at the output (gradients, the costliest verified each quantized alone; at full size through a
proxy resolution: converter/mixed_precision/proxy.py). Those costs are measured on calibration inputs, whose
outputs are not the check's (on the tiny UNet below the costliest alone cost 12.6 dB there while every
tensor quantized together cost 38.0 on the check inputs), so each is read as its share of the summed
costs, and that share of the emulated noise on the check inputs (every matched tensor quantized) is
what it alone would cost at the gate's measure. The departure is the first tensor in the graph's order
that alone would fail the gate, or, when none would, the costliest: the errors of several add up.
The emulation leaves out the weights' int8 and the toolkit's rewrites, so the cause is read from how
much of the loss it explains: the simulator's PSNR against the emulated one. Within EXPLAINED_DB it is
precision; further under it, the toolkit loses what its activations' int8 does not explain: a rewrite
(or the weights' int8), which a float16 layer cannot mend.

Verified on the tiny UNet with one convolution's channel scaled x1000, built in 2 parts
(tests/test_hybrid.py): the departure is that convolution, the cause precision.
"""

from __future__ import annotations

import math

from converter.builds.stages.sensitivity import EXACT_DB, Sensitivities
from converter.common.onnx_graph import Graph

# The emulation against the simulator on every matched tensor quantized: 0.5 dB apart on SD 1.5 at 512 px
# (39.98 emulated, 40.50 simulated), under 2 dB on the tiny UNet (tests/test_hybrid.py).
EXPLAINED_DB = 6.0
CAUSES = {
    "precision": "the int8 of the activations, emulated with the toolkit's own scales, explains the simulator's "
                 "loss: keeping the costliest tensors float16 (build --min-psnr, its hybrid search) can help",
    "rewrite": "the simulator loses more than the int8 of every activation explains, emulated with the toolkit's "
               "own scales: one of its rewrites changed what the graph computes (or its weights' int8); keeping "
               "layers float16 cannot help much",
}
SHOWN = 5  # the costliest tensors listed beside the departure


def departure(measured: Sensitivities, graph: Graph, min_psnr: float, simulated_db: float) -> dict | None:
    """diagnosis.json's `departure` from stage sensitivity's ranking; None when it ranked nothing."""
    if not measured.ranking:
        return None
    order = {o: i for i, node in enumerate(graph.model.graph.node) for o in node.output}
    in_order = sorted(measured.ranking, key=lambda r: order.get(r["tensor"], -1))
    emulated = measured.curve[0]
    shares = _shares(measured.ranking)
    # alone, at the gate's measure: its share of the noise of every tensor quantized, on the check inputs
    at_gate = {t: emulated - 10 * math.log10(share) if share > 0 else EXACT_DB for t, share in shares.items()}
    failing = [r for r in in_order if at_gate[r["tensor"]] < min_psnr]
    row = failing[0] if failing else measured.ranking[0]
    producer = graph.producer.get(row["tensor"])
    cause = "precision" if simulated_db >= emulated - EXPLAINED_DB else "rewrite"
    return {"method": "estimated from stage sensitivity (the toolkit's int8 scales emulated; no layer dumped)",
            "index": in_order.index(row), "layer": row["names"][0], "names": row["names"],
            "op": producer.op_type if producer is not None else "Input", "onnx_tensor": row["tensor"],
            "onnx_nodes": [producer.name] if producer is not None else [],
            "alone_db": round(at_gate[row["tensor"]], 2), "share": round(shares[row["tensor"]], 4),
            "failing_alone": len(failing), "ranked": len(in_order),
            "emulated_db": emulated if emulated < EXACT_DB else None, "simulated_db": simulated_db,
            "proxy": measured.proxy, "cause": cause, "meaning": CAUSES[cause],
            "costliest": [{"tensor": r["tensor"], "share": round(shares[r["tensor"]], 4),
                           "alone_db": round(at_gate[r["tensor"]], 2)} for r in measured.ranking[:SHOWN]]}


def _shares(ranking: list[dict]) -> dict[str, float]:
    """Each tensor's share of the summed noise of the tensors each quantized alone."""
    noise = {r["tensor"]: 10 ** (-r["alone_db"] / 10) if r["alone_db"] < EXACT_DB else 0.0 for r in ranking}
    total = sum(noise.values())
    return {t: n / total if total else 0.0 for t, n in noise.items()}
