"""Read the toolkit's "Network Layer Information Table" (verbose build log, rknn-toolkit2 2.5.0).

One row per compiled layer: `ID OpType DataType Target InputShape OutputShape Cycles [SparseRatio] RW(KB)
FullName`,
FullName being `OpType:name`. Target says where the layer runs: NPU, or CPU for a fallback (and for
the Input/OutputOperator rows, which are not compute). `Cycles` is `DDR/NPU/Total`, the compiler's
static estimate (not a measurement); after the table the log gives the total internal and weight memory.
The memory map that follows ("Feature Tensor Information Table") lists every buffer a layer uses, by
layer ID: `ID User Tensor DataType DataFormat OrigShape NativeShape | Start End Size`.
"""

from __future__ import annotations

import re

from converter.toolkit.child import log_lines

_HEADER = "Network Layer Information Table"
# The columns after OutputShape vary by chip (rk3576 adds SparseRatio, empty on some rows), and layers
# the toolkit inserts itself may have no FullName at all.
_ROW = re.compile(r"\]\s+(?P<id>\d+)\s+(?P<op>\S+)\s+(?P<dtype>\S+)\s+(?P<device>NPU|CPU|GPU)\s+(?P<inputs>\S+)\s+"
                  r"(?P<outputs>\S+)(?P<rest>.*)$")
IO_OPS = ("InputOperator", "OutputOperator")
_CYCLES = re.compile(r"^(\d+)/(\d+)/(\d+)$")
_NUMBER = re.compile(r"^\d+(\.\d+)?$")
_MEMORY = re.compile(r"Total (?P<kind>Internal|Weight) Memory Size: (?P<kb>[\d.]+)KB")
_FEATURES = "Feature Tensor Information Table"
_BUFFER = re.compile(r"\]\s+(?P<id>\d+)\s+\S+\s+\S+\s.*\|\s*0x[0-9a-fA-F]+\s+0x[0-9a-fA-F]+\s+0x(?P<size>[0-9a-fA-F]+)\s*$")


def _cost(rest: list[str]) -> dict:
    """Cycles (DDR / NPU / total) and RW(KB) from a row's columns after OutputShape."""
    at = next((i for i, tok in enumerate(rest) if _CYCLES.match(tok)), None)
    if at is None:
        return {}
    ddr, npu, total = (int(x) for x in _CYCLES.match(rest[at]).groups())
    rw = [tok for tok in rest[at + 1:] if _NUMBER.match(tok)]
    return {"ddr_cycles": ddr, "npu_cycles": npu, "total_cycles": total, "rw_kb": float(rw[-1]) if rw else None}


def placement(log_text: str) -> list[dict]:
    """Rows of the last layer table in the log: {id, layer, op, device, dtype, input_shape, output_shape,
    ddr_cycles, npu_cycles, total_cycles, rw_kb}."""
    lines = log_lines(log_text)
    starts = [i for i, line in enumerate(lines) if _HEADER in line]
    if not starts:
        return []
    rows = []
    for line in lines[starts[-1] + 1:]:
        m = _ROW.search(line)
        if m:
            rest = m["rest"].split()
            last = rest[-1] if rest else ""
            name = last.split(":", 1)[1] if ":" in last else f"#{m['id']} (unnamed)"
            rows.append({"id": int(m["id"]), "layer": name, "op": m["op"], "device": m["device"], "dtype": m["dtype"],
                         "input_shape": m["inputs"], "output_shape": m["outputs"], **_cost(rest)})
        elif rows:
            break  # the table ends at the first line that is not a row
    return rows


def cpu_ops(rows: list[dict]) -> list[dict]:
    """Compute layers that fell back to the CPU (input/output operators are not counted)."""
    return [r for r in rows if r["device"] == "CPU" and r["op"] not in IO_OPS]


def memory(log_text: str) -> dict:
    """{"internal_bytes", "weight_bytes"}: the compiler's totals after the layer table (last build in the log)."""
    found = {}
    for m in _MEMORY.finditer(log_text):
        found[f"{m['kind'].lower()}_bytes"] = round(float(m["kb"]) * 1024)
    return found


def largest_buffers(log_text: str) -> dict[int, int]:
    """Layer ID -> bytes of the largest buffer the memory map gives it (last build in the log)."""
    lines = log_lines(log_text)
    starts = [i for i, line in enumerate(lines) if _FEATURES in line]
    largest: dict[int, int] = {}
    for line in lines[starts[-1] + 1:] if starts else []:
        if "Information Table" in line:
            break
        m = _BUFFER.search(line)
        if m:
            layer = int(m["id"])
            largest[layer] = max(largest.get(layer, 0), int(m["size"], 16))
    return largest
