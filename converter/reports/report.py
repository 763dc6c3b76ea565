"""report.json, report.html and the terminal summary of a build."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from converter.common.json_files import write_text
from converter.reports.cost_html import run_unit
from converter.reports.layer_report import worst_first
from converter.reports.report_html import loras_summary, render, vae_summary
from converter.toolkit.job import quantized
from converter.toolkit.layer_table import IO_OPS, cpu_ops

WORST_SHOWN = 10


def write_html(path: Path, report: dict) -> None:
    write_text(path, render(report))


def _num(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def shortened(name: str, width: int) -> str:
    """A diffusers module path cut to `width` in its middle, keeping where it sits (its first two parts,
    "up_blocks.1", or its first) and what it is (as much of the tail as fits, "ff.net.0"):
    up_blocks.1…ff.net.0. Anything else is cut at its end."""
    if len(name) <= width:
        return name
    parts = name.split(".")
    for kept in (2, 1):
        head, tail = ".".join(parts[:kept]), []
        for part in reversed(parts[kept:]):
            if len(head) + 1 + len(".".join([part, *tail])) > width:
                break
            tail.insert(0, part)
        if tail:
            return f"{head}…{'.'.join(tail)}"
    return name[:max(1, width - 1)] + "…"


def print_layers(console: Console, rows: list[dict], shown: int = WORST_SHOWN) -> None:
    """The layers adding the most noise, one line each: the numbers never wrap or shrink (a log or an
    80-column terminal squeezed them to nothing before) and the module's name is cut in its middle to
    the width left (report.json and report.html keep it whole)."""
    cells = [(str(r["index"]), _num(r.get("added_noise_db"), ".1f"), _num(r.get("cosine"), ".6f"),
              _num(r.get("sqnr_db"), ".1f"), r["op"], r["module"] or r["layer"]) for r in worst_first(rows)[:shown]]
    headings = ("#", "added dB", "cosine", "SQNR dB", "op")
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headings)]
    # a column is padded by one on each side but at the table's edges, set one apart, and the table has an
    # edge of one on each side: the name's column ends the line
    left = max(12, console.width - sum(widths) - 3 * len(widths) - 2)
    table = Table(title=f"Layers adding the most noise (of {len(rows)}; all in report.html)", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for heading, width in zip(headings, widths):
        table.add_column(heading, no_wrap=True, min_width=width)
    name_heading = "diffusers module (or RKNN layer)"
    table.add_column(name_heading if len(name_heading) <= left else "module", no_wrap=True, overflow="ellipsis")
    for *numbers, name in cells:
        table.add_row(*numbers, shortened(name, left))
    console.print(table)


def print_images(console: Console, images: dict) -> None:
    """The image check in one line per figure."""
    s = images["summary"]
    console.print(f"images: {s['images']} prompts, .rknn vs reference: PSNR {s['psnr_db_mean']:.1f} dB (min "
                  f"{s['psnr_db_min']:.1f}), SSIM {s['ssim_mean']:.4f}", highlight=False)
    if "rknn_prompt_accuracy" in s:
        console.print(f"prompt accuracy: reference {s['reference_prompt_accuracy']:.0%}, .rknn "
                      f"{s['rknn_prompt_accuracy']:.0%} (judge: {images['judge']})", highlight=False)


def cost_summary(c: dict, per: str) -> str:
    time = (f" = {c['estimated_seconds_per_step'] * 1e3:.1f} ms per {per} at {c['npu_clock_hz'] / 1e9:g} GHz"
            if c["estimated_seconds_per_step"] is not None else "")
    costliest = next(iter(c["per_module"]), None)
    return (f"{c['total_cycles'] / 1e6:.1f} M cycles{time}, costliest module {costliest}; leaves out the "
            f"{c['attention_layers']} attention layers (0 cycles in the toolkit's estimate). Not a board measurement")


def file_summary(f: dict) -> str:
    """What the .rknn itself declares (converter/toolkit/rknn_file.py), not what the build asked for."""
    io = ", ".join(f"{t['name']} {t['dtype']}" for t in f["inputs"] + f["outputs"])
    if len(f["inputs"]) + len(f["outputs"]) > 4:  # a part's handed-over tensors: long names, one line
        io = ", ".join(f"{len(f[k])} {k if len(f[k]) > 1 else k[:-1]}" for k in ("inputs", "outputs"))
    return (f"{f['target']}, rknn-toolkit2 {f['toolkit_version']} (needs librknnrt {f['toolkit_version']}), "
            f"{sum(f['op_counts'].values())} nodes; {io}")


def placement_summary(rows: list[dict]) -> str:
    fallback = Counter(r["op"] for r in cpu_ops(rows))
    npu = sum(r["device"] == "NPU" for r in rows)
    detail = ", ".join(f"{op} x{n}" for op, n in fallback.most_common())
    return f"{npu} layers on the NPU, {sum(fallback.values())} on the CPU" + (f" ({detail})" if detail else "")


def print_summary(console: Console, report: dict, report_path: Path) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("artifact", f"{report_path.parent / report['artifact']} ({report['artifact_bytes'] / 2**20:.1f} MiB, "
                     f"{report['artifact_to_onnx']:.2f} x the float32 ONNX)"),
        ("target / dtype", f"{report['target']} / {report['dtype']} (weights in: {report['weights']})"),
        ("resolution", f"{report['resolution']} px" if report["resolution"] else "the graph's own shapes (not a UNet)"),
        ("vs ONNX Runtime", f"PSNR {report['output_psnr_db']:.1f} dB, cosine {report['output_cosine']:.6f}, "
                            f"max abs {report['output_max_abs']:.3g}"),
        ("placement", placement_summary(report["placement"])),
        ("layer dtypes", ", ".join(f"{d} x{n}" for d, n in Counter(r["dtype"] for r in report["placement"]
                                                                   if r["op"] not in IO_OPS).most_common())),
        ("host programs", ", ".join(report["host_programs"]) or "none"),
        ("report", f"{report_path} and {report_path.with_suffix('.html').name}"),
    ]
    if report.get("rknn_file") and not report.get("parts"):
        rows.insert(2, ("the file says", file_summary(report["rknn_file"])))
    if report.get("dtype_choice"):
        rows.insert(2, ("dtype auto", report["dtype_choice"]))
    if report.get("shapes_fixed"):
        rows.insert(3, ("shapes", report["shapes_fixed"]))
    if report.get("loras"):
        rows.insert(3, ("LoRAs fused", loras_summary(report["loras"])))
    if report.get("vae"):
        rows.insert(3, ("VAE", vae_summary(report["vae"])))
    if report.get("parts"):
        rows[0] = ("artifact", f"{len(report['parts'])} parts run in turn, {report['artifact_bytes'] / 2**20:.1f} MiB, "
                               f"{report['artifact_to_onnx']:.2f} x the float32 ONNX")
        rows[1:1] = [(f"part {i}", f"{report_path.parent / p['artifact']}: {file_summary(p['rknn_file'])}")
                     for i, p in enumerate(report["parts"], start=1)]
        if report.get("parts_choice"):
            rows.insert(len(report["parts"]) + 1, ("parts auto", report["parts_choice"]))
    if report.get("hybrid_trials"):
        tried = ", ".join(f"{t['float16_layers']}: {t['psnr_db']:.1f} dB" for t in report["hybrid_trials"])
        kept, guess = report.get("hybrid_kept"), f"emulation's guess {report['hybrid_guess']}"
        if report.get("hybrid_floor"):
            guess += f", {report['hybrid_floor']} or fewer not built"
        rows.append(("kept float16", f"{kept} layers, {len(report.get('float16_layers') or [])} toolkit tensors "
                                     f"({guess}; tried {tried})" if kept else
                     f"none reached the gate ({guess}; tried {tried})"))
    share = (report.get("cost") or {}).get("float16_share")
    if share and quantized(report["dtype"]):
        cycles = "" if share["cycles"] is None else f", {share['cycles']:.0%} of the estimated cycles"
        mostly = f"; mostly float16, a {report['dtype']} build in name" if share["layers"] > 0.5 else ""
        rows.append(("float16 share", f"{share['layers']:.0%} of the layers{cycles}{mostly}"))
    if report.get("layers_skipped"):
        rows.append(("layers", report["layers_skipped"]))
    if (report.get("toolkit_config") or {}).get("enable_flash_attention"):
        rows.append(("attention", "the toolkit's flash attention (enable_flash_attention; --attention-tiles auto)"))
    if report.get("cost"):
        rows.append(("cost (estimate)", cost_summary(report["cost"], run_unit(report))))
    for name, part in (report.get("npu_models") or {}).items():
        rows.append((name.replace("_", " "), _part_summary(part, report_path.parent)))
    if report.get("images"):
        s = report["images"]["summary"]
        accuracy = (f", prompt accuracy {s['reference_prompt_accuracy']:.0%} -> {s['rknn_prompt_accuracy']:.0%}"
                    if "rknn_prompt_accuracy" in s else "")
        on_npu = report["images"].get("on_npu") or ["unet"]
        drawn = f"; {' + '.join(on_npu)} on the NPU" if len(on_npu) > 1 else ""
        rows.append(("images", f"{report_path.parent / report['images']['grid']} (reference | .rknn | difference x4): "
                               f"PSNR {s['psnr_db_mean']:.1f} dB, SSIM {s['ssim_mean']:.3f}{accuracy}{drawn}"))
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _part_summary(part: dict, build_dir: Path) -> str:
    """A pipeline model's line: its .rknn and how it did, or why it stays on the CPU."""
    if part["on"] == "cpu":
        return f"on the CPU (onnxruntime): {part['why']}"
    estimate = part["estimate"]
    time = (f" = {_figure(estimate['estimated_seconds_per_step'] * 1e3)} ms a run at "
            f"{estimate['npu_clock_hz'] / 1e9:g} GHz" if estimate.get("estimated_seconds_per_step") is not None else "")
    return (f"{build_dir / part['artifact']} ({part['artifact_bytes'] / 2**20:.1f} MiB), PSNR "
            f"{part['output_psnr_db']:.1f} dB vs ONNX Runtime, {part['placement']}; estimate "
            f"{_figure((estimate.get('total_cycles') or 0) / 1e6)} M cycles{time} (not a board measurement)")


def _figure(value: float) -> str:
    """Three significant digits below 100, whole numbers above (2431, not 2.43e+03)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def print_calibration(console: Console, dataset: Path, stats_path: Path) -> None:
    """Summary of a calibration set (RKNN's `dataset` file, the statistics beside it): where it is and what
    its inputs span."""
    stats = json.loads(stats_path.read_text())
    table = Table(title=f"{stats['count']} samples, {stats['schedule']} ({stats['weighting']} weighting), "
                        f"text encoder: {stats['text_encoder']}", title_justify="left")
    for heading in ("input", "min", "p0.1", "p50", "p99.9", "max", "std"):
        table.add_column(heading)
    for name, s in stats["stats"].items():
        p = s["percentiles"]
        table.add_row(name, *(f"{v:.4g}" for v in (s["min"], p["0.1"], p["50"], p["99.9"], s["max"], s["std"])))
    console.print(table)
    console.print(f"dataset: {dataset}  statistics: {stats_path}")
