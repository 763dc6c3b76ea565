"""`rkconvert compare`: two builds side by side, output and per layer.

Layers pair by the toolkit's layer name; the rest by the ONNX tensor they were matched to (the same
model built two ways keeps its ONNX names even where the toolkit names its layers differently).
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

SUMMARY = ("status", "model", "target", "dtype", "resolution", "output_psnr_db", "output_cosine",
           "output_max_abs", "artifact_bytes", "onnx_bytes")


def _by_tensor(rows: list[dict]) -> dict[str, dict]:
    keyed, seen = {}, {}
    for row in rows:
        base = row["onnx_tensor"]
        seen[base] = seen.get(base, 0) + 1
        keyed[base if seen[base] == 1 else f"{base} #{seen[base]}"] = row
    return keyed


def join_layers(a_rows: list[dict], b_rows: list[dict]) -> list[dict]:
    """One entry per layer: the row of each build (or None) and the SQNR change B - A.

    Rows pair by the toolkit's layer name; what is left pairs by matched ONNX tensor.
    """
    b_left = {r["layer"]: r for r in b_rows}
    partner = {id(a): b_left.pop(a["layer"]) for a in a_rows if a["layer"] in b_left}
    b_by_tensor = _by_tensor([b for b in b_left.values() if b["onnx_tensor"]])
    for key, a in _by_tensor([a for a in a_rows if id(a) not in partner and a["onnx_tensor"]]).items():
        if key in b_by_tensor:
            partner[id(a)] = b_left.pop(b_by_tensor[key]["layer"])
    return ([_entry(a["layer"], a, partner.get(id(a))) for a in a_rows] +
            [_entry(b["layer"], None, b) for b in b_left.values()])


def _entry(key: str, a: dict | None, b: dict | None) -> dict:
    sa, sb = (r.get("sqnr_db") if r else None for r in (a, b))
    delta = sb - sa if sa is not None and sb is not None and math.isfinite(sa) and math.isfinite(sb) else None
    return {"key": key, "module": (a or b)["module"], "a": a, "b": b, "delta_sqnr_db": delta}


# Rows of the toolkit's cost estimate (report.json `cost`) put side by side: label, how to read it.
COST_ROWS = (("estimated cycles", ",.0f", lambda c: c.get("total_cycles")),
             ("estimated ms per step", ".3f",
              lambda c: c.get("estimated_seconds_per_step") and c["estimated_seconds_per_step"] * 1e3),
             ("internal memory bytes", ",.0f", lambda c: c.get("internal_bytes")),
             ("largest attention buffer bytes", ",.0f", lambda c: c.get("largest_attention_buffer_bytes")),
             ("attention DRAM bytes (model)", ",.0f", lambda c: c.get("attention_traffic", {}).get("dram_bytes")))


def cost_rows(a: dict, b: dict) -> list[tuple[str, str, str, str]]:
    """(what, A, B, B vs A) for the cost estimates both builds carry."""
    if not a.get("cost") or not b.get("cost"):
        return []
    rows = []
    for label, fmt, read in COST_ROWS:
        va, vb = read(a["cost"]), read(b["cost"])
        if va is None and vb is None:
            continue
        change = f"{(vb - va) / va:+.1%}" if va and vb is not None else ""  # older reports lack some rows
        rows.append((label, _num(va, fmt), _num(vb, fmt), change))
    return rows


def _num(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def print_comparison(console: Console, a: dict, b: dict, names: tuple[str, str], joined: list[dict], top: int) -> None:
    summary = Table(title="Builds", title_justify="left")
    summary.add_column("")
    for name in names:
        summary.add_column(name, overflow="fold")
    for key in SUMMARY:
        summary.add_row(key, *(str(r.get(key, "")) for r in (a, b)))
    console.print(summary)
    costs = cost_rows(a, b)
    if costs:
        table = Table(title="Cost: estimate from rknn-toolkit2's compiler and the attention traffic model, "
                            "not measured on a board", title_justify="left")
        for heading in ("", *names, "B vs A"):
            table.add_column(heading, overflow="fold")
        for row in costs:
            table.add_row(*row)
        console.print(table)
    if not joined:
        console.print("No per-layer reports to compare (built with --layer-report off, or skipped).")
        return
    both = sorted((j for j in joined if j["delta_sqnr_db"] is not None), key=lambda j: -abs(j["delta_sqnr_db"]))
    table = Table(title=f"Layers whose SQNR against ONNX Runtime changed most (top {top} of {len(both)} "
                        "in both builds)", title_justify="left")
    for heading in ("diffusers module", "SQNR A dB", "SQNR B dB", "B - A dB", "cosine A", "cosine B", "ONNX tensor / layer"):
        table.add_column(heading, overflow="fold")
    for j in both[:top]:
        table.add_row(j["module"], _num(j["a"]["sqnr_db"], ".1f"), _num(j["b"]["sqnr_db"], ".1f"),
                      _num(j["delta_sqnr_db"], "+.1f"), _num(j["a"].get("cosine"), ".6f"),
                      _num(j["b"].get("cosine"), ".6f"), j["key"])
    console.print(table)
    only_a = sum(j["b"] is None for j in joined)
    only_b = sum(j["a"] is None for j in joined)
    console.print(f"layers only in A: {only_a}, only in B: {only_b}, unpaired or unmapped rows are in --json")
