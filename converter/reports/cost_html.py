"""The cost section of report.html: the toolkit's estimate per module along depth, its costliest layers,
and the attention traffic model, each labelled as the estimate it is."""

from __future__ import annotations

import html


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def run_unit(report: dict) -> str:
    """What one inference of the built graph is: a UNet's denoising step, or a run of another graph."""
    return "UNet step" if (report.get("graph") or "unet") == "unet" else "run"


def cost_section(cost: dict | None, per: str) -> str:
    """`per`: what one inference is (report.run_unit)."""
    if not cost:
        return ""
    total = cost["total_cycles"] or 1
    per_step = (f", {cost['estimated_seconds_per_step'] * 1e3:.2f} ms per {per} at "
                f"{cost['npu_clock_hz'] / 1e9:g} GHz" if cost["estimated_seconds_per_step"] is not None else "")
    modules = "".join(
        f"<tr><td class=t>{html.escape(name)}</td><td>{m['layers']}</td><td>{m['total_cycles']:,}</td>"
        f"<td><div style='background:#6a8caf;height:10px;width:{300 * m['total_cycles'] / total:.0f}px'></div></td>"
        f"<td>{m['rw_kb'] / 1024:.1f}</td></tr>" for name, m in cost["per_module"].items())
    top = "".join(f"<tr><td class=t>{html.escape(r['layer'])}</td><td>{html.escape(r['op'])}</td>"
                  f"<td>{r['total_cycles']:,}</td><td>{r['rw_kb']}</td></tr>" for r in cost["top_layers"])
    traffic = cost["attention_traffic"]
    attention = "".join(
        f"<tr><td class=t>{html.escape(t['layer'])}</td><td>{t['heads']}</td><td>{t['queries']}</td><td>{t['keys']}</td>"
        f"<td>{_mib(t['scores_bytes'])}</td><td>{'yes' if t['scores_fit_on_chip'] else 'no'}</td>"
        f"<td>{_mib(t['dram_bytes'])}</td><td>{_mib(t.get('largest_buffer_bytes') or 0)}</td></tr>"
        for t in traffic["layers"])
    return (f"<h2 id=cost>Cost: {html.escape(cost['label'])}</h2>"
            f"<p>{cost['total_cycles']:,} cycles over {cost['layers']} layers{per_step}; it leaves out "
            f"{html.escape(cost['leaves_out'])}. Internal memory {_mib(cost.get('internal_bytes', 0))}, weights "
            f"{_mib(cost.get('weight_bytes', 0))}, layer reads and writes {_mib(cost['rw_bytes'])}.</p>"
            f"<table id=cost-modules><thead><tr><th>module</th><th>layers</th><th>cycles</th><th>share</th>"
            f"<th>RW MiB</th></tr></thead><tbody>{modules}</tbody></table>"
            f"<h3>Costliest layers</h3><table id=cost-top><thead><tr><th>layer</th><th>op</th><th>cycles</th>"
            f"<th>RW KB</th></tr></thead><tbody>{top}</tbody></table>"
            f"<h3>Attention: DRAM traffic, {html.escape(traffic['label'])}</h3>"
            f"<p>{_mib(traffic['dram_bytes'])} per {per}; {traffic['layers_whose_scores_spill']} of "
            f"{len(traffic['layers'])} attention layers' score matrices do not fit on chip. Largest buffer of an "
            f"attention layer in the compiler's memory map: {_mib(cost.get('largest_attention_buffer_bytes', 0))}.</p>"
            f"<table id=cost-attention><thead><tr><th>layer</th><th>heads</th><th>queries</th><th>keys</th>"
            f"<th>scores</th><th>fit on chip</th><th>DRAM traffic</th><th>largest buffer</th></tr></thead>"
            f"<tbody>{attention}</tbody></table>")
