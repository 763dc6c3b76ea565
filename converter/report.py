"""report.json and the terminal summary of a build."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table


def _finite(value):
    """JSON has no Infinity: a bit-exact output reports PSNR as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_finite(data), indent=2) + "\n")
    tmp.rename(path)


def print_summary(console: Console, report: dict, report_path: Path) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("artifact", f"{report_path.parent / report['artifact']} ({report['artifact_bytes'] / 2**20:.1f} MiB)"),
        ("target / dtype", f"{report['target']} / {report['dtype']}"),
        ("resolution", f"{report['resolution']} px"),
        ("vs ONNX Runtime", f"PSNR {report['output_psnr_db']:.1f} dB, cosine {report['output_cosine']:.6f}, "
                            f"max abs {report['output_max_abs']:.3g}"),
        ("host programs", ", ".join(report["host_programs"]) or "none"),
        ("report", str(report_path)),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
