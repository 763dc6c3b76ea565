"""Read the toolkit's "Network Layer Information Table" (verbose build log, rknn-toolkit2 2.5.0).

One row per compiled layer: `ID OpType DataType Target InputShape OutputShape Cycles [SparseRatio] RW(KB)
FullName`,
FullName being `OpType:name`. Target says where the layer runs: NPU, or CPU for a fallback (and for
the Input/OutputOperator rows, which are not compute).
"""

from __future__ import annotations

import re

from converter.common.child_process import log_lines

_HEADER = "Network Layer Information Table"
# The columns after OutputShape vary by chip (rk3576 adds SparseRatio, empty on some rows), and layers
# the toolkit inserts itself may have no FullName at all.
_ROW = re.compile(r"\]\s+(?P<id>\d+)\s+(?P<op>\S+)\s+(?P<dtype>\S+)\s+(?P<device>NPU|CPU|GPU)\s+(?P<inputs>\S+)\s+"
                  r"(?P<outputs>\S+)(?P<rest>.*)$")
IO_OPS = ("InputOperator", "OutputOperator")


def placement(log_text: str) -> list[dict]:
    """Rows of the last layer table in the log: {layer, op, device, dtype, output_shape}."""
    lines = log_lines(log_text)
    starts = [i for i, line in enumerate(lines) if _HEADER in line]
    if not starts:
        return []
    rows = []
    for line in lines[starts[-1] + 1:]:
        m = _ROW.search(line)
        if m:
            last = (m["rest"].split() or [""])[-1]
            name = last.split(":", 1)[1] if ":" in last else f"#{m['id']} (unnamed)"
            rows.append({"layer": name, "op": m["op"], "device": m["device"], "dtype": m["dtype"],
                         "output_shape": m["outputs"]})
        elif rows:
            break  # the table ends at the first line that is not a row
    return rows


def cpu_ops(rows: list[dict]) -> list[dict]:
    """Compute layers that fell back to the CPU (input/output operators are not counted)."""
    return [r for r in rows if r["device"] == "CPU" and r["op"] not in IO_OPS]
