"""One fuzz trial: a seed's graph built for a target and dtype in the toolkit (a child process) and checked
against ONNX Runtime; a failure diagnosed as `rkconvert diagnose` would (reduced, matched, repro.py)."""

from __future__ import annotations

import shutil
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from converter.diagnose import failing_graph, probe
from converter.fuzz.graphs import random_graph
from converter.toolkit import known_failures
from converter.toolkit.job import ToolkitSettings

# Float16 keeps a fuzz graph near 60-80 dB against ONNX Runtime; under 40 something computes another
# function. Int8 activations cost far more on random weights: under 20 dB is a collapse, not noise.
FLOAT16_GATE_DB, QUANTIZED_GATE_DB = 40.0, 20.0
CALIBRATION_SAMPLES = 4
BUDGET_S = 60.0  # a fuzz graph builds in seconds: a minute without a result is no progress
GRAPH, PROBE, DIAGNOSIS = "graph.onnx", "probe", "diagnosis"


@dataclass(frozen=True)
class Trial:
    seed: int
    dtype: str
    patterns: tuple[str, ...]
    nodes: int
    failure: dict | None  # Failure.to_json() of the whole graph; None: it built within the gate
    diagnosed: bool  # diagnose ended in a diagnosis (folder `diagnosis/`)
    error: str | None  # an error of rkconvert's own (not the toolkit's), "probe: ..." or "diagnose: ..."
    seconds: float
    folder: str | None  # kept only for a failure

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Trial:
        return cls(**{**data, "patterns": tuple(data["patterns"])})


def normal_feed(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Standard normal values for every (float, static-shape) input of `model`."""
    return {v.name: rng.standard_normal([d.dim_value for d in v.type.tensor_type.shape.dim]).astype(np.float32)
            for v in model.graph.input}


def _feeds(model: onnx.ModelProto, seed: int, folder: Path) -> list[str]:
    """The check input, then the calibration samples."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(1 + CALIBRATION_SAMPLES):
        paths.append(str((folder / f"{i}.npz").resolve()))
        np.savez(paths[-1], **normal_feed(model, rng))
    return paths


def run_trial(seed: int, target: str, dtype: str, work: Path, catalogue: Path = known_failures.CATALOGUE) -> Trial:
    """Seed `seed`'s graph for `target` as `dtype`, in `work`/<seed>-<dtype>/ (removed when it built)."""
    start = time.monotonic()
    graph = random_graph(seed)
    folder = work / f"{seed}-{dtype}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    onnx.save(graph.model, folder / GRAPH)
    settings = probe.Probe(ToolkitSettings(target, dtype), BUDGET_S, str((folder / GRAPH).resolve()),
                           _feeds(graph.model, seed, folder / "feeds"),
                           FLOAT16_GATE_DB if dtype == "float16" else QUANTIZED_GATE_DB)
    failure = error = None
    try:
        failure = probe.run(folder / GRAPH, settings, folder / PROBE)
        if failure:
            failing_graph.diagnose_graph(settings, failure, [folder / PROBE / "toolkit.log"], folder / DIAGNOSIS,
                                         catalogue)
    except Exception as e:  # noqa: BLE001 - what the fuzzer is for: every such ending is counted and kept
        error = f"{'diagnose' if failure else 'probe'}: {type(e).__name__}: {e}".splitlines()[0]
        (folder / "error.txt").write_text(traceback.format_exc())
    kept = failure is not None or error is not None
    if not kept:
        shutil.rmtree(folder)
    return Trial(seed, dtype, graph.patterns, len(graph.model.graph.node), failure and failure.to_json(),
                 failure is not None and error is None, error, round(time.monotonic() - start, 1),
                 str(folder) if kept else None)
