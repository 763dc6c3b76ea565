"""report.html: one self-contained page (no network, no external files) for a person to read a build.

Summary, output accuracy, an SVG plot of each layer's SQNR against ONNX Runtime along depth, and a
sortable table of every layer, the layers that add the most noise first.
"""

from __future__ import annotations

import html
import json
import math

from converter.reports.cost_html import cost_section, run_unit
from converter.reports.layer_report import worst_first
from converter.toolkit.layer_table import cpu_ops

COLUMNS = (  # (key, heading, decimals or None for text)
    ("index", "#", 0),
    ("module", "diffusers module", None),
    ("op", "op", None),
    ("added_noise_db", "added noise dB", 1),
    ("cosine", "cosine", 6),
    ("sqnr_db", "SQNR dB", 1),
    ("psnr_db", "PSNR dB", 1),
    ("max_abs", "max abs", 4),
    ("mean_abs", "mean abs", 5),
    ("rel_error", "rel error", 5),
    ("single_cos", "toolkit single cos", 5),
    ("golden_cosine", "toolkit float vs ORT cos", 6),
    ("mapping", "mapping", None),
    ("layer", "RKNN layer", None),
    ("onnx_tensor", "ONNX tensor", None),
    ("why_unmapped", "why unmapped", None),
)

_STYLE = """
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}
td.t{text-align:left;max-width:32em;overflow:hidden;text-overflow:ellipsis}
th{background:#eee;cursor:pointer;position:sticky;top:0}
.bad{color:#b00;font-weight:bold} .ok{color:#080;font-weight:bold} dl{display:grid;grid-template-columns:max-content auto;gap:2px 1em}
dt{font-weight:bold} svg{background:#fafafa;border:1px solid #ddd}
"""

_SORT = """
document.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  const key = r => { const v = r.cells[col].dataset.v; const n = parseFloat(v);
                     return isNaN(n) ? v : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }).forEach(r => body.appendChild(r));
}));
"""


def _fmt(value, decimals) -> tuple[str, str]:
    """(shown text, sort key) for a cell."""
    if value is None:
        return "", ""
    if decimals is None:
        return html.escape(str(value)), html.escape(str(value), quote=True)
    if isinstance(value, float) and not math.isfinite(value):
        return ("∞" if value > 0 else "-∞"), ("1e300" if value > 0 else "-1e300")
    return f"{value:.{decimals}f}", repr(value)


def _table(rows: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in COLUMNS)
    body = []
    for row in rows:
        cells = []
        for key, _, decimals in COLUMNS:
            shown, sort = _fmt(row.get(key), decimals)
            cls = ' class="t"' if decimals is None else ""
            title = f' title="{shown}"' if decimals is None else ""
            cells.append(f'<td{cls}{title} data-v="{sort}">{shown}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table id=layers><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _depth_plot(rows: list[dict], width: int = 900, height: int = 260) -> str:
    """SQNR (dB) of every matched layer against its execution index."""
    points = [(r["index"], r["sqnr_db"]) for r in rows
              if r.get("sqnr_db") is not None and math.isfinite(r["sqnr_db"])]
    if not points:
        return "<p>No matched layer to plot.</p>"
    n = max(i for i, _ in points) or 1
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    lo, hi = math.floor(min(lo, 0) / 10) * 10, math.ceil(hi / 10) * 10 or 10
    pad = 40
    x = lambda i: pad + (width - 2 * pad) * i / n  # noqa: E731
    y = lambda v: height - pad - (height - 2 * pad) * (v - lo) / (hi - lo)  # noqa: E731
    dots = "".join(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2"><title>#{i}: {v:.1f} dB</title></circle>'
                   for i, v in points)
    ticks = "".join(f'<text x="4" y="{y(v) + 4:.1f}" font-size="10">{v:g}</text>'
                    f'<line x1="{pad}" x2="{width - pad}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
                    for v in range(int(lo), int(hi) + 1, max(10, int((hi - lo) / 6) // 10 * 10)))
    return (f'<svg id=depth width="{width}" height="{height}" role="img" '
            f'aria-label="SQNR against ONNX Runtime along depth">{ticks}'
            f'<text x="{width / 2}" y="{height - 8}" font-size="11" text-anchor="middle">layer (execution order)</text>'
            f'<g fill="#36c">{dots}</g></svg>')


def _placement(rows: list[dict]) -> str:
    if not rows:
        return ""
    fallback = cpu_ops(rows)
    npu = sum(r["device"] == "NPU" for r in rows)
    items = "".join(f"<tr><td class=t>{html.escape(r['op'])}</td><td class=t>{html.escape(r['layer'])}</td>"
                    f"<td class=t>{html.escape(r['output_shape'])}</td></tr>" for r in fallback)
    table = (f"<table id=cpu><thead><tr><th>op</th><th>layer</th><th>output shape</th></tr></thead>"
             f"<tbody>{items}</tbody></table>") if fallback else ""
    return (f"<h2>Placement</h2><p id=placement>{npu} layers on the NPU, {len(fallback)} compute layers "
            f"fell back to the CPU (input/output operators not counted).</p>{table}")


def _images(images: dict | None) -> str:
    """The image check: the .rknn's images beside the reference's, per prompt, with their figures."""
    if not images:
        return ""
    s = images["summary"]
    folder = images["grid"].rsplit("/", 1)[0]
    judged = "rknn_prompt_accuracy" in s
    head = "".join(f"<th>{h}</th>" for h in ("prompt", "seed", "reference", ".rknn", "difference x4", "PSNR dB",
                                             "SSIM"))
    rows = []
    for r in images["rows"]:
        pictures = (f'<img src="{folder}/{r[k]}" alt="{k}" width=128 height=128>'
                    for k in ("reference", "rknn", "difference"))
        cells = [html.escape(r["prompt"]), str(r["seed"]), *pictures, _fmt(r["psnr_db"], 1)[0], f"{r['ssim']:.4f}"]
        if judged:
            cells += [("yes" if r["reference_ok"] else "no: " + html.escape(r["reference_why"])),
                      ("yes" if r["rknn_ok"] else "no: " + html.escape(r["rknn_why"]))]
        rows.append("<tr>" + "".join(f"<td class=t>{c}</td>" for c in cells) + "</tr>")
    if judged:
        head += "<th>reference shows the prompt</th><th>.rknn shows the prompt</th>"
    accuracy = (f" Prompt accuracy (judge: {html.escape(str(images['judge']))}): reference "
                f"{s['reference_prompt_accuracy']:.0%}, .rknn {s['rknn_prompt_accuracy']:.0%}." if judged else "")
    return (f"<h2>Images</h2><p id=images>{s['images']} prompts, {images['steps']} steps, guidance "
            f"{images['guidance_scale']:g}: the .rknn's images against ONNX Runtime's, PSNR {s['psnr_db_mean']:.1f} dB "
            f"(min {s['psnr_db_min']:.1f}), SSIM {s['ssim_mean']:.4f}.{accuracy}</p>"
            f"<table id=image-rows><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _npu_models(parts: dict | None) -> str:
    """The pipeline's text encoder and VAE decoder: each one's own build (its report.json has the rest), or why
    it stays on the CPU."""
    if not parts:
        return ""
    rows = []
    for name, p in parts.items():
        if p["on"] == "cpu":
            cells = [name, "CPU (onnxruntime)", html.escape(p["why"]), "", "", ""]
        else:
            e = p["estimate"]
            cycles = f"{e['total_cycles'] / 1e6:.3g} M" if e.get("total_cycles") is not None else "?"
            placed = p["artifact"] or "not placed: the build did not pass"
            size = f"{p['artifact_bytes'] / 2**20:.1f} MiB" if p["artifact_bytes"] else ""
            cells = [name, f'<a href="{html.escape(p["folder"])}/report.html">{html.escape(placed)}</a>',
                     html.escape(p["placement"]), size,
                     _fmt(p["output_psnr_db"], 1)[0], cycles]
        rows.append("<tr>" + "".join(f"<td class=t>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("part", "on the NPU as", "placement", "size", "PSNR dB vs ONNX Runtime",
                                             "cycles (toolkit's estimate, not a board's)"))
    return (f"<h2>Text encoder and VAE decoder</h2><table id=npu-models><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _declared(f: dict | None) -> str:
    """What the .rknn file itself declares (converter/toolkit/rknn_file.py): the facts a board runtime will see."""
    if not f:
        return ""
    io = "".join(f"<tr><td class=t>{kind}</td><td class=t>{html.escape(t['name'])}</td>"
                 f"<td class=t>{html.escape(str(t['shape']))}</td><td class=t>{html.escape(str(t['dtype']))}</td>"
                 f"<td class=t>{html.escape(str(t['layout']))}</td></tr>"
                 for kind, ts in (("input", f["inputs"]), ("output", f["outputs"])) for t in ts)
    constants = ", ".join(f"{html.escape(d)} {n / 2**20:.2f} MiB" for d, n in f["constant_bytes"].items())
    ops = ", ".join(f"{html.escape(op)} x{n}" for op, n in f["op_counts"].items())
    return (f"<h2>The .rknn declares</h2><p id=declared>target {html.escape(f['target'])}, rknn-toolkit2 "
            f"{html.escape(f['toolkit_version'])} (compiler {html.escape(f['compiler_version'])}; the board's "
            f"librknnrt must match), format {f['format_version']}, {f['file_bytes']:,} bytes. Constants: "
            f"{constants}.</p><table id=declared-io><thead><tr><th></th><th>tensor</th><th>shape</th><th>dtype</th>"
            f"<th>layout</th></tr></thead><tbody>{io}</tbody></table><p>Nodes: {ops}.</p>")


def loras_summary(loras: list[dict]) -> str:
    return ", ".join(f"{one['file']} at {one['scale']:g} (sha256 {one['sha256'][:12]})" for one in loras)


def vae_summary(vae: dict) -> str:
    return f"{vae['file']} ({vae['kind']}, sha256 {vae['sha256'][:12]}) in place of the model's own"


def render(report: dict) -> str:
    status_cls = "ok" if report.get("status") == "ok" else "bad"
    facts = [("status", f'<span class="{status_cls}">{html.escape(report.get("status", "?"))}</span>')]
    for key in ("error", "model", "target", "dtype", "dtype_choice", "weights", "resolution", "shapes_fixed",
                "toolkit_version",
                "artifact", "output_psnr_db", "output_cosine", "output_max_abs", "layers_skipped"):
        if report.get(key) is not None:
            value = report[key]
            shown = f"{value:.6g}" if isinstance(value, float) else str(value)
            facts.append((key, html.escape(shown)))
    if report.get("loras"):
        facts.append(("LoRAs fused", html.escape(loras_summary(report["loras"]))))
    if report.get("vae"):
        facts.append(("VAE", html.escape(vae_summary(report["vae"]))))
    if report.get("parts"):
        facts.append(("parts", html.escape(", ".join(f"{p['artifact']} ({p['bytes'] / 2**20:.1f} MiB)"
                                                     for p in report["parts"]) + ", run in this order")))
    diagnosis = report.get("diagnosis")
    if diagnosis:
        found = diagnosis["failure"] or "no failure"
        fix = f"; fix: {diagnosis['fix']}" if diagnosis["fix"] else "; no known fix (repro ready to report)"
        facts.insert(2, ("diagnosis", f'<a href="{html.escape(diagnosis["file"])}">{html.escape(found + fix)}</a>'))
    summary = "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in facts)
    rows = report.get("layers") or []
    worst = worst_first(rows)
    unmapped = sum(r["mapping"] == "unmapped" for r in rows)
    layers = (f"<h2>Error along depth</h2>{_depth_plot(rows)}"
              f"<h2>Layers ({len(rows)}, {unmapped} unmapped), most added noise first</h2>"
              f"<p>Click a heading to sort. Metrics compare the simulator with ONNX Runtime on check sample 0.</p>"
              f"{_table(worst)}") if rows else "<p>No per-layer report in this build.</p>"
    stages = html.escape(json.dumps(report.get("stages") or []))
    return (f"<!doctype html><html><head><meta charset=utf-8><title>rkconvert report: "
            f"{html.escape(str(report.get('model')))} for {html.escape(str(report.get('target')))}</title>"
            f"<style>{_STYLE}</style></head><body><h1>rkconvert build report</h1><dl>{summary}</dl>"
            f"{''.join(_declared(p.get('rknn_file')) for p in report.get('parts') or [report])}"
            f"{_npu_models(report.get('npu_models'))}{_images(report.get('images'))}"
            f"{_placement(report.get('placement') or [])}"
            f"{cost_section(report.get('cost'), run_unit(report))}{layers}<details><summary>stages</summary><pre>{stages}</pre></details>"
            f"<script>{_SORT}</script></body></html>")

