"""Stage `rknn` (and each `hybrid-<k>` trial): rknn-toolkit2 builds the .rknn and runs it in its simulator
(in a child process): the graph whole, or its parts relayed (converter/toolkit/relay.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter.builds.build_dir import StageOutput, StageResult
from converter.builds.stage_run import StageRunner
from converter.builds.stages.reference import Reference
from converter.builds.toolkit_inputs import ToolkitInputs
from converter.common.accuracy import compare
from converter.common.progress import Progress
from converter.toolkit import driver, rknn_file
from converter.toolkit.job import QUANT_CONFIG, STEP1_DIR, ToolkitJob, ToolkitSettings
from converter.toolkit.layer_table import cpu_ops, largest_buffers, memory, placement
from converter.toolkit.relay import relay

PLACEMENT = "placement.json"


@dataclass(frozen=True)
class Converted(StageOutput):
    rknn: list[Path]  # the .rknn of the graph, or of each part in run order
    part_io: list[dict]  # per part: {"inputs", "outputs"}
    placement: Path  # where each compiled layer runs (NPU / CPU), from the toolkit's layer table
    cpu_ops: int
    memory: dict  # the compiler's totals (internal, weight), summed over the parts
    float16_layers: list[str]  # kept float16 in a quantized build (hybrid)
    float16_layers_applied: int
    toolkit_config: dict  # the further config() keywords it was built with
    auto_hybrid: bool  # built with the toolkit's own auto_hybrid (--toolkit-auto-hybrid)
    snapshot: Path | None  # the toolkit's per-layer dumps, when asked for
    # A quantized build's hybrid_quantization_step1 folder (its own, or the plain build's it started from),
    # of the graph or of each part: its config has every quantized tensor's range.
    step1: list[Path]
    toolkit_version: str
    phases: dict  # toolkit call -> seconds
    phase_peak_rss_bytes: dict
    peak_rss_bytes: int
    simulator: list[list[Path]]  # per check sample, the simulator's output .npy per graph output

    @classmethod
    def read(cls, record: StageResult) -> Converted:
        m, root = record.meta, record.path
        return cls(record, [root / r for r in m["rknn"]], m["part_io"], root / m["placement"], m["cpu_ops"],
                   m["memory"], m["float16_layers"], m["float16_layers_applied"], m["toolkit_config"], m["auto_hybrid"],
                   root / m["snapshot"] if m["snapshot"] else None, [root / c for c in m["step1"]],
                   m["toolkit_version"], m["phases"],
                   m["phase_peak_rss_bytes"], m["peak_rss_bytes"], [[root / p for p in s] for s in m["simulator"]])

    @property
    def quant_configs(self) -> list[Path]:
        return [folder / QUANT_CONFIG for folder in self.step1]

    def placement_rows(self) -> list[dict]:
        return json.loads(self.placement.read_text())

    def file_facts(self) -> list[rknn_file.RknnFile]:
        """What each built .rknn declares about itself (a corrupt file fails here, before delivery)."""
        return [rknn_file.read(path) for path in self.rknn]

    def accuracy(self, reference: Reference) -> dict:
        """Simulator outputs against ONNX Runtime's, over every check sample (graph outputs in order)."""
        ref = np.concatenate([np.load(path).ravel() for outputs in reference.outputs for path in outputs.values()])
        sim = np.concatenate([np.load(path).ravel() for outputs in self.simulator for path in outputs])
        return compare(sim, ref)


def stage(runner: StageRunner, given: ToolkitInputs, toolkit: ToolkitSettings, dumps: bool,
          parts_in_turn: bool) -> Converted:
    """The toolkit's build (of each part, in turn), simulated on the check inputs (every layer dumped if
    `dumps`)."""
    what = f"rknn-toolkit2 {toolkit.dtype} build for {toolkit.target} + simulator"
    what += f", {len(given.split.parts)} parts" if given.split else ""
    return Converted.read(runner.run(
        "rknn", what, toolkit.key(layer_dumps=dumps), given.stages,
        lambda tmp: run(given.jobs(toolkit), given.reference, dumps, runner.logs / "rknn.log", runner.progress, tmp,
                        parts_in_turn)))


def part_log(log: Path, i: int, count: int) -> Path:
    """The toolkit log of part `i` of `count` (`log` itself for a whole model)."""
    return log if count == 1 else log.with_name(f"{log.stem}-part{i}.log")


def run(jobs: list[ToolkitJob], reference: Reference, layer_dumps: bool, log: Path, progress: Progress,
        tmp: Path, in_turn: bool = False) -> dict:
    """The toolkit's build and simulator check of each job (the parts relayed, or `in_turn`)."""
    samples = [dict(s) for s in reference.samples]
    whole = len(jobs) == 1
    out_dirs = [tmp if whole else tmp / f"part{i}" for i in range(1, len(jobs) + 1)]
    logs = [part_log(log, i, len(jobs)) for i in range(1, len(jobs) + 1)]
    feeds = []
    for job, out_dir in zip(jobs, out_dirs):  # a part's inputs: the graph's, and earlier parts' simulator outputs
        feeds.append([{n: s[n] for n in job.inputs} for s in samples])
        for sample, outputs in zip(samples, driver.simulator_outputs(out_dir, len(samples), len(job.outputs))):
            sample.update(zip(job.outputs, outputs))

    def build(i: int, tick) -> tuple:
        if not whole:
            progress.note(f"part {i + 1} of {len(jobs)}: {len(jobs[i].inputs)} inputs, {len(jobs[i].outputs)} outputs")
        return driver.build_and_simulate(jobs[i], out_dirs[i], feeds[i], logs[i], tick, layer_dumps)

    results = relay(len(jobs), build, progress.tick, overlap=not in_turn)
    built = [(out_dir, job_log.read_text(errors="replace"), run_, result)
             for out_dir, job_log, (run_, result) in zip(out_dirs, logs, results)]
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
        "part_io": [{"inputs": list(job.inputs), "outputs": list(job.outputs)} for job in jobs],
        "placement": PLACEMENT,
        "cpu_ops": len(cpu_ops(rows)),
        # the parts are loaded together on the board: their memory adds up
        "memory": {key: sum(m.get(key, 0) for m in memories) for key in set().union(*memories)},
        "float16_layers": list(jobs[0].float16_layers),
        "toolkit_config": jobs[0].options,
        "auto_hybrid": jobs[0].auto_hybrid,
        "float16_layers_applied": sum(r["float16_layers_applied"] for _, _, _, r in built),
        "snapshot": driver.SNAPSHOT_DIR if layer_dumps else None,
        "step1": [str(job.step1) if job.step1 else str((out_dir / STEP1_DIR).relative_to(tmp))
                  for job, (out_dir, _, _, _) in zip(jobs, built) if job.quantized and not job.auto_hybrid],
        "toolkit_version": driver.toolkit_version(),
        "phases": phases,
        "phase_peak_rss_bytes": peaks,
        # wait4() sees only the child's last call's peak (the child resets it per call: worker.PEAKS). The
        # largest child's: relayed parts overlap while one finishes (toolkit/relay.py; the bench sees the tree).
        "peak_rss_bytes": max(max(run_.peak_rss_bytes, *r["phase_peak_rss_bytes"].values()) for _, _, run_, r in built),
        "simulator": [[str(sample[name].resolve().relative_to(tmp.resolve())) for name in reference.outputs[0]]
                      for sample in samples],
    }


def run_unattended(jobs: list[ToolkitJob], reference: Reference, log: Path, tmp: Path, in_turn: bool = False) -> dict:
    """`run` without a terminal and without dumps: a hybrid trial as a Ray task's body, on any node that
    sees the build folder."""
    from rich.console import Console

    return run(jobs, reference, False, log, Progress(Console(quiet=True)), tmp, in_turn)
