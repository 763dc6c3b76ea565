"""Parent side of the RKNN backend: prepared ONNX in, `.rknn` and simulator outputs out.

The toolkit runs in a child process (converter/toolkit/worker.py) in a throw-away scratch directory;
only finished files are moved into `out_dir`.
"""

from __future__ import annotations

import json
import socket
import tempfile
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx

from converter.toolkit.child import Child, ChildRun
from converter.common.errors import BuildFailed

from targets.chip import Chip

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


def _job(onnx_path: Path, chip: Chip, scratch: Path, out_dir: Path, samples: list[dict[str, Path]],
         input_names: list[str], output_names: list[str], layer_dumps: bool, dtype: str, dataset: Path | None,
         float16_layers: list[str] | None, toolkit_config: dict | None = None) -> dict:
    return {
        "onnx": str(onnx_path.resolve()),
        "target": chip.name,
        "rknn": str((scratch / RKNN_NAME).resolve()),
        "inputs": input_names,
        "outputs": output_names,
        "samples": [{k: str(Path(v).resolve()) for k, v in s.items()} for s in samples],
        "outputs_dir": str((out_dir / "simulator").resolve()),
        "result": str((scratch / "result.json").resolve()),
        "snapshot_dir": str((out_dir / SNAPSHOT_DIR).resolve()) if layer_dumps and samples else None,
        "config": ({} if dtype == "float16" else {"quantized_dtype": dtype}) | (toolkit_config or {}),
        "dataset": str(_absolute_dataset(dataset, scratch)) if dtype != "float16" else None,
        "float16_layers": float16_layers or [],
    }


def _start(job: dict, scratch: Path, log: Path) -> Child:
    job_file = scratch / "job.json"
    job_file.write_text(json.dumps(job, indent=1))
    return Child("converter.toolkit.worker", [str(job_file)], scratch, log, f"rknn-toolkit2 {toolkit_version()}")


def build_and_simulate(onnx_path: Path, chip: Chip, out_dir: Path, samples: list[dict[str, Path]],
                       input_names: list[str], output_names: list[str], log: Path,
                       on_tick: Callable | None = None, layer_dumps: bool = False,
                       dtype: str = "float16", dataset: Path | None = None,
                       float16_layers: list[str] | None = None,
                       toolkit_config: dict | None = None, budget_s: float | None = None) -> tuple[ChildRun, dict]:
    """Build `onnx_path` for `chip` into `out_dir`/model.rknn and run `samples` in the simulator.

    `dtype` is RKNN's name: "float16" (no quantization) or "w8a8", which needs `dataset` (RKNN's
    dataset file: a line per sample, the .npy of each input in input order, NCHW for 4-D inputs).
    `float16_layers` (toolkit tensor names) stay float16 in a quantized build (hybrid quantization).
    `toolkit_config`: more keyword arguments for the toolkit's `config()` (e.g. enable_flash_attention).
    With `layer_dumps`, the toolkit also dumps every layer for the first sample into `out_dir`/snapshot
    (converter/toolkit/snapshot.py reads it). `budget_s`: stop the toolkit after this long.
    Returns the child's run record and {"phases": {call: seconds}, "outputs": [[npy per output]]}.
    Raises converter.common.errors.BuildFailed when the toolkit fails or dies.
    """
    (out_dir / "simulator").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=out_dir.resolve()) as scratch:
        job = _job(onnx_path, chip, Path(scratch), out_dir, samples, input_names, output_names, layer_dumps, dtype,
                   dataset, float16_layers, toolkit_config)
        run = _start(job, Path(scratch), log).wait(on_tick, budget_s)
        result = json.loads(Path(job["result"]).read_text())
        Path(job["rknn"]).replace(out_dir / RKNN_NAME)
    return run, result


Infer = Callable[[list[dict[str, np.ndarray]]], list[list[np.ndarray]]]


def simulate_model(folder: Path, model: onnx.ModelProto, feed: dict[str, np.ndarray], chip: Chip,
                   layer_dumps: bool = False, toolkit_config: dict | None = None) -> tuple[dict, Path]:
    """An in-memory `model` and one `feed` written into `folder`, built and simulated as build_and_simulate
    does (log in `folder`/rknn.log): its result, and the folder holding model.rknn (and any snapshot)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "model.onnx"
    onnx.save(model, str(onnx_path))
    samples = {}
    for j, (name, value) in enumerate(feed.items()):
        samples[name] = folder / f"input-{j}.npy"
        np.save(samples[name], value)
    out_dir = folder / "rknn"
    _, result = build_and_simulate(onnx_path, chip, out_dir, [samples], [i.name for i in model.graph.input],
                                   [o.name for o in model.graph.output], folder / "rknn.log", layer_dumps=layer_dumps,
                                   toolkit_config=toolkit_config)
    return result, out_dir


@contextmanager
def serving_simulator(onnx_path: Path, chip: Chip, out_dir: Path, input_names: list[str], output_names: list[str],
                      log: Path, on_tick: Callable | None = None, dtype: str = "float16",
                      dataset: Path | None = None, float16_layers: list[str] | None = None,
                      toolkit_config: dict | None = None) -> Iterator[Infer]:
    """Build as build_and_simulate does, then keep the simulator up: yields infer([feed, ...]) ->
    [[output, ...], ...] (graph inputs by name, outputs in graph order). The built model lands in
    `out_dir`/model.rknn when the block ends without error. BuildFailed if the toolkit fails or dies."""
    (out_dir / "simulator").mkdir(parents=True, exist_ok=True)
    # A socket path must stay under 108 bytes: it goes in the system's temp folder, not the build folder.
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=out_dir.resolve()) as scratch, \
            tempfile.TemporaryDirectory(prefix="rkconvert-") as sockets:
        address = str(Path(sockets) / "simulator.sock")
        job = {**_job(onnx_path, chip, Path(scratch), out_dir, [], input_names, output_names, False, dtype, dataset,
                      float16_layers, toolkit_config), "serve": address}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(address)
            server.listen(1)
            server.settimeout(0.5)
            child = _start(job, Path(scratch), log)
            try:
                conn = _accept(server, child, on_tick)
            except BaseException:
                child.kill()
                raise
        with conn:
            def infer(feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
                try:
                    conn.send(("infer", feeds))
                    return conn.recv()
                except (EOFError, OSError):
                    raise child.failure() from None

            try:
                yield infer
                conn.send(("close",))
            except BaseException:
                child.kill()
                raise
        child.wait(on_tick)
        Path(job["rknn"]).replace(out_dir / RKNN_NAME)


def _accept(server: socket.socket, child: Child, on_tick: Callable | None) -> Connection:
    """The worker's connection once its build is done; BuildFailed if it ends first."""
    while True:
        try:
            sock, _ = server.accept()
            return Connection(sock.detach())
        except socket.timeout:
            if child.poll(on_tick):
                raise child.failure() if child.proc.returncode else BuildFailed(
                    f"{child.what} ended without serving the simulator (see {child.log})")
