"""Attention tiling on the toolkit's own estimate: whole UNets untiled vs tiled, and single attention
blocks per tile count, as JSON.

    .venv/bin/python tools/bench_tiling.py --model sd15 --resolution 512 [--variants off,auto]
    .venv/bin/python tools/bench_tiling.py --blocks [--tiles 1,2,4,8,16,32,64] [--target rk3576 --flash-attention]

UNets: the real CLI once per --attention-tiles variant, one after the other (an SD 1.5 build at 512²
holds ~15 GB); from each report: the compiler's total internal memory and the largest attention buffer
of its memory map, the analytic DRAM traffic of attention (targets/attention_traffic.py), the layer
table's cycles and its time per step at the NPU clock, the tile counts chosen, output PSNR against ONNX
Runtime, build time and the process tree's peak memory (the simulator's inference included).
Blocks: one diffusers `Attention` at each SD 1.5 shape at 512², whole and in N query tiles: cycles,
internal memory, largest attention buffer, PSNR in the simulator (the table targets/attention_traffic.py
quotes). With --flash-attention, each block is also built whole with the toolkit's own
`enable_flash_attention=True` (documented for rk3562 / rk3576), the peer to beat.
Cycles, memory map and traffic are estimates (the compiler's, or arithmetic on shapes), not a board.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_build import git_commit, machine, timed_build  # tools/ is on sys.path when a tool runs as a script

from converter.common import onnx_runtime
from converter.common.accuracy import compare
from converter.common.errors import BuildFailed
from converter.models.attention_block import trace_attention
from converter.models.family import TEXT_TOKENS
from converter.reports.build_report import BuildReport
from converter.toolkit import driver
from converter.toolkit.layer_table import largest_buffers, memory, placement
from graph_passes.tile_attention import TileAttention
from targets import get_chip
from targets.attention_traffic import tiled_traffic

# SD 1.5 at 512²: (tokens, channels, cross-attention width or None); 8 heads throughout.
SD15_BLOCKS = ((4096, 320, None), (4096, 320, 768), (1024, 640, None), (1024, 640, 768), (256, 1280, None),
               (64, 1280, None))
HEADS = 8


def build_variant(args, tiles: str, folder: Path) -> dict:
    run = timed_build(["--target", args.target, "--model", args.model, "--resolution", str(args.resolution),
                       "--layer-report", "off", "--attention-tiles", tiles,
                       "--parts", "1"], folder)  # one memory map: tiling's figures, not the cut's
    report: BuildReport | None = run["report"]
    row = {"attention_tiles": tiles, "exit_code": run["exit_code"], "wall_seconds": run["wall_seconds"],
           "peak_rss_bytes": run["peak_rss_bytes"]}
    if report is None:
        return row
    cost = report.cost or {}  # the toolkit's estimate, as reports/cost.py lays it out
    traffic = cost.get("attention_traffic", {})
    tiling = next((p for p in report.passes or [] if p["pass"] == "tile_attention"), {"rewrites": []})
    return {
        **row, "stages": report.stages, "toolkit_phases": report.toolkit_phases,
        "toolkit_phase_peak_rss_bytes": report.toolkit_phase_peak_rss_bytes,
        "output_psnr_db": report.psnr_db, "output_cosine": report.accuracy.cosine if report.accuracy else None,
        "artifact_bytes": report.delivered.artifact_bytes if report.delivered else None,
        "tiled_attentions": tiling["rewrites"],
        "estimate": {k: cost.get(k) for k in ("label", "total_cycles", "estimated_seconds_per_step", "internal_bytes",
                                              "weight_bytes", "attention_layers", "largest_attention_buffer_bytes")},
        "attention_dram_bytes_model": traffic.get("dram_bytes"),
        "attention_layers_whose_scores_spill": traffic.get("layers_whose_scores_spill"),
        "error": report.error,
    }


def build_block(tokens: int, dim: int, context: int | None, tiles: int, chip, folder: Path,
                flash: bool = False) -> dict:
    folder.mkdir(parents=True)
    model, feed = trace_attention(folder / "whole.onnx", tokens, dim, HEADS, context)
    tiled, _, _ = TileAttention(tiles).run(model)
    start = time.monotonic()
    result, _ = driver.simulate_model(folder, tiled, feed, chip.name,
                                      options={"enable_flash_attention": True} if flash else None)
    seconds = time.monotonic() - start
    log = (folder / "rknn.log").read_text(errors="replace")
    rows, buffers = placement(log), largest_buffers(log)
    attention = [r for r in rows if r["op"] == "exSDPAttention"]
    reference = onnx_runtime.run(onnx_runtime.session(model), feed)["y"]
    keys = TEXT_TOKENS if context else tokens
    return {
        "tokens": tokens, "keys": keys, "channels": dim, "heads": HEADS, "tiles": tiles, "flash_attention": flash,
        "fused_attention_layers": len(attention),
        "total_cycles": sum(r.get("total_cycles", 0) for r in rows),
        "attention_cycles": sum(r.get("total_cycles", 0) for r in attention),
        **memory(log),
        "largest_attention_buffer_bytes": max((buffers.get(r["id"], 0) for r in attention), default=0),
        "attention_dram_bytes_model": tiled_traffic(HEADS, dim // HEADS, tokens, keys, tiles, chip.sram_bytes),
        "psnr_db": compare(np.load(result["outputs"][0][0]), reference)["psnr_db"],
        "toolkit_seconds": round(seconds, 1), "phases": result["phases"],
        "cpu_layers": sum(r["device"] == "CPU" and r["op"] not in ("InputOperator", "OutputOperator") for r in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd15")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--target", default="rk3588")
    parser.add_argument("--variants", default="off,auto", help="--attention-tiles values to build")
    parser.add_argument("--blocks", action="store_true", help="single attention blocks at SD 1.5's 512² shapes")
    parser.add_argument("--tiles", default="1,2,4,8,16,32,64", help="tile counts for --blocks")
    parser.add_argument("--flash-attention", action="store_true",
                        help="--blocks: also each block whole with the toolkit's enable_flash_attention")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    name = "blocks" if args.blocks else f"{args.model.replace(':', '-')}-{args.resolution}"
    json_path = args.json or Path("bench-results") / f"tiling-{name}-{args.target}.json"
    result = {"benchmark": "tiling", "target": args.target, "commit": git_commit(), "machine": machine()}
    chip = get_chip(args.target)
    with tempfile.TemporaryDirectory(prefix="bench-tiling-") as tmp:
        if args.blocks:
            result["blocks"] = []
            runs = [(int(t), False) for t in args.tiles.split(",")] + ([(1, True)] if args.flash_attention else [])
            for tokens, dim, context in SD15_BLOCKS:
                for tiles, flash in runs:
                    if tiles > tokens:
                        continue
                    folder = Path(tmp) / f"{tokens}-{dim}-{context}-{tiles}{'-flash' if flash else ''}"
                    try:
                        row = build_block(tokens, dim, context, tiles, chip, folder, flash)
                    except BuildFailed as e:
                        row = {"tokens": tokens, "channels": dim, "context": context, "tiles": tiles,
                               "flash_attention": flash, "error": str(e)}
                    print(json.dumps({k: row.get(k) for k in ("tokens", "keys", "tiles", "flash_attention",
                                                              "internal_bytes", "largest_attention_buffer_bytes",
                                                              "psnr_db", "error")}), flush=True)
                    result["blocks"].append(row)
        else:
            result.update(model=args.model, resolution=args.resolution, variants={})
            for tiles in args.variants.split(","):
                result["variants"][tiles] = build_variant(args, tiles, Path(tmp) / tiles)
                print(json.dumps({tiles: {k: v for k, v in result["variants"][tiles].items()
                                          if k not in ("stages", "tiled_attentions")}}), flush=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
