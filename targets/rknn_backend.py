"""Parent side of the RKNN backend: prepared ONNX in, `.rknn` and simulator outputs out.

The toolkit runs in a child process (targets/rknn_worker.py) in a throw-away scratch directory;
only finished files are moved into `out_dir`.
"""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

from converter.common.child_process import ChildRun, run_module

from .chip import Chip

RKNN_NAME = "model.rknn"
SNAPSHOT_DIR = "snapshot"


def toolkit_version() -> str:
    try:
        return version("rknn-toolkit2")
    except PackageNotFoundError:
        return "not installed"


def _absolute_dataset(dataset: Path, scratch: Path) -> Path:
    """RKNN's dataset file with absolute paths (the toolkit runs in the scratch folder)."""
    lines = [" ".join(str((dataset.parent / f).resolve()) for f in line.split())
             for line in dataset.read_text().splitlines() if line.strip()]
    path = scratch / "dataset.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def build_and_simulate(onnx_path: Path, chip: Chip, out_dir: Path, samples: list[dict[str, Path]],
                       input_names: list[str], output_names: list[str], log: Path,
                       on_tick: Callable | None = None, layer_dumps: bool = False,
                       dtype: str = "float16", dataset: Path | None = None,
                       float16_layers: list[str] | None = None) -> tuple[ChildRun, dict]:
    """Build `onnx_path` for `chip` into `out_dir`/model.rknn and run `samples` in the simulator.

    `dtype` is RKNN's name: "float16" (no quantization) or "w8a8", which needs `dataset` (RKNN's
    dataset file: a line per sample, the .npy of each input in input order, NCHW for 4-D inputs).
    `float16_layers` (toolkit tensor names) stay float16 in a quantized build (hybrid quantization).
    With `layer_dumps`, the toolkit also dumps every layer for the first sample into `out_dir`/snapshot
    (converter/reports/toolkit_snapshot.py reads it).
    Returns the child's run record and {"phases": {call: seconds}, "outputs": [[npy per output]]}.
    Raises converter.common.errors.BuildFailed when the toolkit fails or dies.
    """
    sim_dir = out_dir / "simulator"
    sim_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=out_dir.resolve()) as scratch:
        job = {
            "onnx": str(onnx_path.resolve()),
            "target": chip.name,
            "rknn": str((Path(scratch) / RKNN_NAME).resolve()),
            "inputs": input_names,
            "outputs": output_names,
            "samples": [{k: str(Path(v).resolve()) for k, v in s.items()} for s in samples],
            "outputs_dir": str(sim_dir.resolve()),
            "result": str((Path(scratch) / "result.json").resolve()),
            "snapshot_dir": str((out_dir / SNAPSHOT_DIR).resolve()) if layer_dumps and samples else None,
            "config": {} if dtype == "float16" else {"quantized_dtype": dtype},
            "dataset": str(_absolute_dataset(dataset, Path(scratch))) if dtype != "float16" else None,
            "float16_layers": float16_layers or [],
        }
        job_file = Path(scratch) / "job.json"
        job_file.write_text(json.dumps(job, indent=1))
        run = run_module("targets.rknn_worker", [str(job_file)], Path(scratch), log,
                         f"rknn-toolkit2 {toolkit_version()}", on_tick)
        result = json.loads(Path(job["result"]).read_text())
        Path(job["rknn"]).replace(out_dir / RKNN_NAME)
    return run, result
