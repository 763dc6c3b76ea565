"""Stage `rknn`: rknn-toolkit2 builds the .rknn and runs it in its simulator (in a child process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from converter.pipeline.build_dir import StageResult
from converter.pipeline.pass_selection import toolkit_attention
from converter.pipeline.request import BuildRequest
from converter.common.accuracy import compare
from converter.common.progress import Progress
from converter.toolkit import driver, rknn_file
from converter.toolkit.layer_table import cpu_ops, largest_buffers, memory, placement

PLACEMENT = "placement.json"


def toolkit_config(req: BuildRequest) -> dict:
    """Keywords the toolkit's config() gets beyond target and dtype (the chip's flash attention under
    --attention-tiles auto): part of the stage's key, and recorded so a rebuild for images matches."""
    return toolkit_attention(req.chip, req.dtype, req.attention_tiles)


def toolkit_models(passes: StageResult, split: StageResult | None, calib: StageResult | None) -> list[dict]:
    """What the toolkit builds, in run order ({"onnx", "inputs", "outputs", "dataset"}): the passes' graph,
    or its parts (--parts), each fed the graph's inputs and earlier parts' outputs by name. `calib` is the
    calibration the toolkit gets: stage calib for a whole graph, stage split-calib for parts."""
    if split is None:
        return [{"onnx": passes.path / passes.meta["onnx"], "inputs": list(passes.meta["inputs"]),
                 "outputs": passes.meta["outputs"], "dataset": calib.path / calib.meta["dataset"] if calib else None}]
    return [{**part, "onnx": split.path / part["onnx"],
             "dataset": calib.path / calib.meta["datasets"][i] if calib else None}
            for i, part in enumerate(split.meta["parts"])]


def part_log(log: Path, i: int, count: int) -> Path:
    """The toolkit log of part `i` of `count` (`log` itself for a whole model)."""
    return log if count == 1 else log.with_name(f"{log.stem}-part{i}.log")


def run(req: BuildRequest, passes: StageResult, split: StageResult | None, reference: StageResult,
        calib: StageResult | None, layer_dumps: bool, log: Path, progress: Progress, tmp: Path,
        float16_layers: list[str] | None = None) -> dict:
    config = toolkit_config(req)
    samples = [{k: reference.path / v for k, v in s.items()} for s in reference.meta["samples"]]
    models = toolkit_models(passes, split, calib)
    built = []
    for i, model in enumerate(models, start=1):
        # a part is built after the one before has exited: one toolkit holds one part's weights at a time
        whole = len(models) == 1
        out_dir, model_log = (tmp if whole else tmp / f"part{i}"), part_log(log, i, len(models))
        if not whole:
            progress.note(f"part {i} of {len(models)}: {len(model['inputs'])} inputs, {len(model['outputs'])} outputs")
        run_, result = driver.build_and_simulate(
            model["onnx"], req.chip, out_dir, [{n: s[n] for n in model["inputs"]} for s in samples], model["inputs"],
            model["outputs"], model_log, progress.tick, layer_dumps, req.dtype, model["dataset"], float16_layers,
            config)
        for sample, outputs in zip(samples, result["outputs"]):
            sample.update(zip(model["outputs"], map(Path, outputs)))
        built.append((out_dir, model_log.read_text(errors="replace"), run_, result))
    rows = []
    for i, (_, log_text, _, _) in enumerate(built, start=1):
        buffers = largest_buffers(log_text)
        for row in placement(log_text):
            part = {"part": i} if len(built) > 1 else {}
            rows.append({**row, "largest_buffer_bytes": buffers.get(row["id"]), **part})
    (tmp / PLACEMENT).write_text(json.dumps(rows))
    memories = [memory(log_text) for _, log_text, _, _ in built]
    named = (lambda i, call: call) if len(built) == 1 else (lambda i, call: f"part{i} {call}")
    phases = {named(i, call): seconds for i, (_, _, _, r) in enumerate(built, start=1)
              for call, seconds in r["phases"].items()}
    peaks = {named(i, call): peak for i, (_, _, _, r) in enumerate(built, start=1)
             for call, peak in r["phase_peak_rss_bytes"].items()}
    return {
        "rknn": [str((out_dir / driver.RKNN_NAME).relative_to(tmp)) for out_dir, _, _, _ in built],
        "part_io": [{"inputs": m["inputs"], "outputs": m["outputs"]} for m in models],
        "placement": PLACEMENT,
        "cpu_ops": len(cpu_ops(rows)),
        # the parts are loaded together on the board: their memory adds up
        "memory": {key: sum(m.get(key, 0) for m in memories) for key in set().union(*memories)},
        "float16_layers": float16_layers or [],
        "toolkit_config": config,
        "float16_layers_applied": sum(r["float16_layers_applied"] for _, _, _, r in built),
        "snapshot": driver.SNAPSHOT_DIR if layer_dumps else None,
        "toolkit_version": driver.toolkit_version(),
        "phases": phases,
        "phase_peak_rss_bytes": peaks,
        # wait4() sees only the child's last call's peak (the child resets it per call: rknn_worker.PEAKS).
        "peak_rss_bytes": max(max(run_.peak_rss_bytes, *r["phase_peak_rss_bytes"].values()) for _, _, run_, r in built),
        "simulator": [[str(sample[name].relative_to(tmp.resolve())) for name in passes.meta["outputs"]]
                      for sample in samples],
    }


def run_unattended(req: BuildRequest, passes: StageResult, split: StageResult | None, reference: StageResult,
                   calib: StageResult | None, log: Path, tmp: Path, float16_layers: list[str]) -> dict:
    """`run` without a terminal and without dumps: a hybrid trial as a Ray task's body, on any node that
    sees the build folder."""
    from rich.console import Console

    return run(req, passes, split, reference, calib, False, log, Progress(Console(quiet=True)), tmp, float16_layers)


def file_facts(rknn: StageResult) -> list[dict]:
    """What each built .rknn declares about itself (a corrupt file fails here, before delivery)."""
    return [rknn_file.read(rknn.path / rel).to_json() for rel in rknn.meta["rknn"]]


def placement_rows(rknn: StageResult) -> list[dict]:
    """Where each compiled layer runs (NPU / CPU), from the toolkit's layer table."""
    return json.loads((rknn.path / rknn.meta["placement"]).read_text())


def output_accuracy(passes: StageResult, reference: StageResult, rknn: StageResult) -> dict:
    """Simulator outputs against ONNX Runtime's, over every check sample."""
    names = passes.meta["outputs"]
    ref = np.concatenate([np.load(reference.path / o[n]).ravel() for o in reference.meta["outputs"] for n in names])
    sim = np.concatenate([np.load(rknn.path / p).ravel() for outs in rknn.meta["simulator"] for p in outs])
    return compare(sim, ref)
