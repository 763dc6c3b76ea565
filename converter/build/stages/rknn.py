"""Stage `rknn`: rknn-toolkit2 builds the .rknn and runs it in its simulator (in a child process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from converter.build.build_dir import StageResult
from converter.build.pass_selection import toolkit_attention
from converter.build.request import BuildRequest
from converter.common.accuracy import compare
from converter.common.progress import Progress
from targets import rknn_backend, rknn_file
from targets.layer_table import cpu_ops, largest_buffers, memory, placement

PLACEMENT = "placement.json"


def toolkit_config(req: BuildRequest) -> dict:
    """Keywords the toolkit's config() gets beyond target and dtype (the chip's flash attention under
    --attention-tiles auto): part of the stage's key, and recorded so a rebuild for images matches."""
    return toolkit_attention(req.chip, req.dtype, req.attention_tiles)


def run(req: BuildRequest, passes: StageResult, reference: StageResult, calib: StageResult | None,
        layer_dumps: bool, log: Path, progress: Progress, tmp: Path, float16_layers: list[str] | None = None) -> dict:
    config = toolkit_config(req)
    samples = [{k: reference.path / v for k, v in s.items()} for s in reference.meta["samples"]]
    run_, result = rknn_backend.build_and_simulate(
        passes.path / passes.meta["onnx"], req.chip, tmp, samples, list(passes.meta["inputs"]),
        passes.meta["outputs"], log, progress.tick, layer_dumps, req.dtype,
        calib.path / calib.meta["dataset"] if calib else None, float16_layers, config)
    log_text = log.read_text(errors="replace")
    rows = placement(log_text)
    buffers = largest_buffers(log_text)
    for row in rows:
        row["largest_buffer_bytes"] = buffers.get(row["id"])
    (tmp / PLACEMENT).write_text(json.dumps(rows))
    return {
        "rknn": rknn_backend.RKNN_NAME,
        "placement": PLACEMENT,
        "cpu_ops": len(cpu_ops(rows)),
        "memory": memory(log_text),
        "float16_layers": float16_layers or [],
        "toolkit_config": config,
        "float16_layers_applied": result["float16_layers_applied"],
        "snapshot": rknn_backend.SNAPSHOT_DIR if layer_dumps else None,
        "toolkit_version": rknn_backend.toolkit_version(),
        "phases": result["phases"],
        "phase_peak_rss_bytes": result["phase_peak_rss_bytes"],
        # wait4() sees only the child's last call's peak (the child resets it per call: rknn_worker.PEAKS).
        "peak_rss_bytes": max(run_.peak_rss_bytes, *result["phase_peak_rss_bytes"].values()),
        "simulator": [[str(Path(p).relative_to(tmp.resolve())) for p in outs] for outs in result["outputs"]],
    }


def run_unattended(req: BuildRequest, passes: StageResult, reference: StageResult, calib: StageResult | None,
                   log: Path, tmp: Path, float16_layers: list[str]) -> dict:
    """`run` without a terminal and without dumps: a hybrid trial as a Ray task's body, on any node that
    sees the build folder."""
    from rich.console import Console

    return run(req, passes, reference, calib, False, log, Progress(Console(quiet=True)), tmp, float16_layers)


def file_facts(rknn: StageResult) -> dict:
    """What the built .rknn declares about itself (a corrupt file fails here, before delivery)."""
    return rknn_file.read(rknn.path / rknn.meta["rknn"]).to_json()


def placement_rows(rknn: StageResult) -> list[dict]:
    """Where each compiled layer runs (NPU / CPU), from the toolkit's layer table."""
    return json.loads((rknn.path / rknn.meta["placement"]).read_text())


def output_accuracy(passes: StageResult, reference: StageResult, rknn: StageResult) -> dict:
    """Simulator outputs against ONNX Runtime's, over every check sample."""
    names = passes.meta["outputs"]
    ref = np.concatenate([np.load(reference.path / o[n]).ravel() for o in reference.meta["outputs"] for n in names])
    sim = np.concatenate([np.load(rknn.path / p).ravel() for outs in rknn.meta["simulator"] for p in outs])
    return compare(sim, ref)
