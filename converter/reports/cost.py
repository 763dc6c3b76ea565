"""The toolkit's own cost estimate of a build: cycles and DRAM traffic per compiled layer, summed per
UNet module, and an estimated time per UNet step at the chip's NPU clock; for the attention layers, to
which that estimate gives 0 cycles, an analytic DRAM-traffic model from their shapes.

All of it is estimate, never measurement: the compiler's table (the verbose log) knows nothing of the
runtime's scheduling, DDR contention or the CPU's part, and leaves attention out; the traffic model
(targets/attention_traffic.py, its assumptions there) is arithmetic on shapes. The memory map's largest
buffer per layer is the compiler's own allocation. Only a board measures a board.
"""

from __future__ import annotations

import re
from collections import defaultdict

from targets.attention_traffic import layer_traffic
from targets.chip import Chip
from converter.toolkit.layer_table import IO_OPS

LABEL = "estimate from rknn-toolkit2's compiler, not measured on a board"
ATTENTION_OPS = ("exSDPAttention",)
TOP = 10


def module_of(layer: str) -> str:
    """The diffusers module a compiled layer belongs to ("down_blocks.1", "mid_block", "conv_in"), from
    the ONNX node path the toolkit keeps in its name; layers it made up itself go to "(toolkit)"."""
    parts = [p for p in layer.split("/") if p]
    if not layer.startswith("/") or len(parts) < 2:
        return "(toolkit)"
    return parts[0]


def _shapes(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(d) for d in m.split(",")) for m in re.findall(r"\(([\d,]+)\)", text)]


def attention_traffic(row: dict, sram_bytes: int) -> dict | None:
    """DRAM bytes one exSDPAttention moves, from its input shapes: Q (heads, d, 1, queries), K and V
    (heads, d, 1, keys), as rknn-toolkit2 2.5.0 lays them out."""
    shapes = _shapes(row.get("input_shape", ""))
    if len(shapes) < 2 or len(shapes[0]) != 4:  # the table elides later shapes with "..."
        return None
    (heads, d, _, queries), (_, _, _, keys) = shapes[0], shapes[1]
    return {"layer": row["layer"], "heads": heads, "queries": queries, "keys": keys,
            "largest_buffer_bytes": row.get("largest_buffer_bytes"), **layer_traffic(heads, d, queries, keys, sram_bytes)}


def cost(rows: list[dict], memory: dict, chip: Chip) -> dict | None:
    """report.json `cost` from the layer table rows (converter.toolkit.layer_table.placement) and memory totals."""
    layers = [r for r in rows if r["op"] not in IO_OPS and "total_cycles" in r]
    if not layers:
        return None
    total = sum(r["total_cycles"] for r in layers)
    per_module: dict[str, dict] = defaultdict(lambda: {"total_cycles": 0, "rw_kb": 0.0, "layers": 0})
    for r in layers:
        m = per_module[module_of(r["layer"])]
        m["total_cycles"] += r["total_cycles"]
        m["rw_kb"] += r["rw_kb"] or 0.0
        m["layers"] += 1
    attention = [r for r in layers if r["op"] in ATTENTION_OPS]
    traffic = [t for t in (attention_traffic(r, chip.sram_bytes) for r in attention) if t]
    float16 = [r for r in layers if r["dtype"] == "FLOAT16"]
    return {
        "label": LABEL,
        "leaves_out": f"{len(attention)} attention layers ({', '.join(ATTENTION_OPS)}) that the compiler gives "
                      f"{sum(r['total_cycles'] for r in attention)} cycles; runtime scheduling and DDR contention",
        "layers": len(layers),
        "total_cycles": total,
        "ddr_cycles": sum(r["ddr_cycles"] for r in layers),
        "npu_cycles": sum(r["npu_cycles"] for r in layers),
        "rw_bytes": round(sum(r["rw_kb"] or 0.0 for r in layers) * 1024),
        "npu_clock_hz": chip.npu_clock_hz,
        "estimated_seconds_per_step": total / chip.npu_clock_hz if chip.npu_clock_hz else None,
        **memory,
        "per_module": dict(sorted(per_module.items(), key=lambda kv: -kv[1]["total_cycles"])),
        "top_layers": [{"layer": r["layer"], "op": r["op"], "total_cycles": r["total_cycles"], "rw_kb": r["rw_kb"],
                        "largest_buffer_bytes": r.get("largest_buffer_bytes")}
                       for r in sorted(layers, key=lambda r: -r["total_cycles"])[:TOP]],
        # what share of the compiled layers, and of the estimated cycles, runs in float16: what a quantized
        # build really is once the hybrid search has kept layers in float16
        "float16_share": {"layers": round(len(float16) / len(layers), 4),
                          "cycles": round(sum(r["total_cycles"] for r in float16) / total, 4) if total else None},
        "attention_layers": len(attention),
        "largest_attention_buffer_bytes": max((r.get("largest_buffer_bytes") or 0 for r in attention), default=0),
        "attention_traffic": {
            "label": f"analytic model from the layers' shapes (float16, a head's scores on chip when they fit "
                     f"in half of {chip.sram_bytes // 1024} KB), not measured",
            "dram_bytes": sum(t["dram_bytes"] for t in traffic),
            "layers_whose_scores_spill": sum(not t["scores_fit_on_chip"] for t in traffic),
            "layers": traffic,
        },
    }


HEADLINE = ("label", "leaves_out", "total_cycles", "npu_clock_hz", "estimated_seconds_per_step")


def estimate_headline(estimate: dict | None) -> dict:
    """What a line about a model's cost needs of its estimate (`cost`): its label, what it leaves out, its cycles."""
    return {k: (estimate or {}).get(k) for k in HEADLINE}
