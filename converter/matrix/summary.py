"""The matrix's summary: one row per entry, in the terminal, summary.json and summary.html."""

from __future__ import annotations

import html
import json
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from converter.matrix.entry_run import EntryResult
from converter.common.json_files import write_json, write_text

SUMMARY_JSON, SUMMARY_HTML = "summary.json", "summary.html"


def row(outcome: EntryResult) -> dict:
    r = outcome.report
    seconds = r.estimated_seconds_per_step if r else None
    return {"entry": outcome.name, "status": outcome.status, "target": r and r.target, "dtype": r and r.dtype,
            "output_psnr_db": r and r.psnr_db, "artifact_bytes": r and r.delivered and r.delivered.artifact_bytes,
            "estimated_cycles": r and r.estimated_cycles,
            "estimated_ms_per_step": seconds * 1e3 if seconds is not None else None,
            "seconds": outcome.seconds, "error": outcome.error, "diagnosis": r and r.diagnosis,
            "report": f"{outcome.name}/report.html" if r else None}


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _figures(r: dict) -> list[str]:
    """PSNR dB, MiB, estimated M cycles, estimated ms, seconds: as the table and the page show them."""
    return [_num(r["output_psnr_db"], ".1f"), _num(r["artifact_bytes"] and r["artifact_bytes"] / 2**20, ".1f"),
            _num(r["estimated_cycles"] and r["estimated_cycles"] / 1e6, ".2f"),
            _num(r["estimated_ms_per_step"], ".2f"), _num(r["seconds"], ".0f")]


def print_summary(console: Console, rows: list[dict]) -> None:
    """Numbers never wrap or shrink; the entry name takes what width is left, folded."""
    table = Table(title="Matrix (est. cost: the toolkit's cycle table, attention left out, ms at the NPU clock "
                        "where known; not a board)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("entry", overflow="fold", ratio=1)
    for heading in ("status", "PSNR dB", "MiB", "est. Mcyc", "est. ms", "time s"):
        table.add_column(heading, no_wrap=True, min_width=len(heading))
    for r in rows:
        table.add_row(r["entry"], r["status"], *_figures(r))
    console.print(table)
    for r in rows:
        if r["error"]:
            console.print(f"{r['entry']}: {r['error']}", markup=False, highlight=False)


def write(out: Path, matrix: Path, rows: list[dict], executor: str) -> None:
    """summary.json and summary.html in `out` (temp names, then renamed)."""
    counts = {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})}
    data = {"matrix": str(matrix.resolve()), "executor": executor, "counts": counts, "entries": rows}
    write_json(out / SUMMARY_JSON, data)  # a PSNR of inf (outputs identical) as null: still JSON
    write_text(out / SUMMARY_HTML, _html(data))


def _html(data: dict) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("entry", "status", "PSNR dB", "MiB", "est. M cycles", "est. ms / step",
                                              "time s", "error"))
    body = []
    for r in data["entries"]:
        name = html.escape(r["entry"])
        link = f'<a href="{html.escape(r["report"])}">{name}</a>' if r["report"] else name
        cells = [link, html.escape(r["status"]), *_figures(r), html.escape(r["error"] or "")]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f"<!doctype html><meta charset=utf-8><title>rkconvert matrix</title>"
            f"<h1>{html.escape(Path(data['matrix']).name)}</h1><p>{html.escape(json.dumps(data['counts']))}; "
            f"executor {html.escape(data['executor'])}. Estimated cost: the toolkit's cycle table, attention left "
            f"out, in ms at the NPU clock where rkconvert knows it; not a board measurement.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>\n")

