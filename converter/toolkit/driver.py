"""Parent side of the toolkit: a ToolkitJob in, `.rknn` and simulator outputs out.

The toolkit runs in a child process (converter/toolkit/worker.py) in a throw-away scratch directory;
only finished files are moved into `out_dir`.
"""

from __future__ import annotations

import json
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx

from converter.common.errors import BuildFailed
from converter.toolkit.child import Child, ChildRun
from converter.toolkit.job import STEP1_DIR, ToolkitJob

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


def simulator_outputs(out_dir: Path, samples: int, outputs: int) -> list[list[Path]]:
    """Where a build into `out_dir` saves its simulator outputs: per check sample, an .npy per graph
    output. Known before the build starts, so a later part's build can be handed them as its inputs."""
    return [[out_dir / "simulator" / f"{i}-{j}.npy" for j in range(outputs)] for i in range(samples)]


def _worker_spec(job: ToolkitJob, scratch: Path, out_dir: Path, samples: list[dict[str, Path]],
                 layer_dumps: bool) -> dict:
    """The worker's instructions: the job with paths it can open from its scratch folder, and where to
    put what it makes."""
    dataset = _absolute_dataset(job.dataset, scratch) if job.quantized and not job.step1 else None
    return {
        "job": replace(job, onnx=job.onnx.resolve(), dataset=dataset).to_json(),
        "rknn": str((scratch / RKNN_NAME).resolve()),
        "step1_dir": str((scratch / STEP1_DIR).resolve()) if job.quantized and not (job.step1 or job.auto_hybrid)
        else None,
        "samples": [{k: str(Path(v).resolve()) for k, v in s.items()} for s in samples],
        "outputs": [[str(p.resolve()) for p in sample]
                    for sample in simulator_outputs(out_dir, len(samples), len(job.outputs))],
        "result": str((scratch / "result.json").resolve()),
        "snapshot_dir": str((out_dir / SNAPSHOT_DIR).resolve()) if layer_dumps and samples else None,
    }


def _start(spec: dict, scratch: Path, log: Path) -> Child:
    spec_file = scratch / "job.json"
    spec_file.write_text(json.dumps(spec, indent=1))
    return Child("converter.toolkit.worker", [str(spec_file)], scratch, log, f"rknn-toolkit2 {toolkit_version()}")


def build_and_simulate(job: ToolkitJob, out_dir: Path, samples: list[dict[str, Path]], log: Path,
                       on_tick: Callable | None = None, layer_dumps: bool = False,
                       budget_s: float | None = None) -> tuple[ChildRun, dict]:
    """Build `job` into `out_dir`/model.rknn and run `samples` (input name -> .npy) in the simulator.

    A quantized build not started from another's step1 also leaves its step1 files in `out_dir`/step1.
    With `layer_dumps`, the toolkit also dumps every layer for the first sample into `out_dir`/snapshot
    (converter/toolkit/snapshot.py reads it). `budget_s`: stop the toolkit after this long.
    Returns the child's run record and {"phases": {call: seconds}, "outputs": [[npy per output]]}.
    Raises converter.common.errors.BuildFailed when the toolkit fails or dies.
    """
    (out_dir / "simulator").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=out_dir.resolve()) as scratch:
        spec = _worker_spec(job, Path(scratch), out_dir, samples, layer_dumps)
        run = _start(spec, Path(scratch), log).wait(on_tick, budget_s)
        result = json.loads(Path(spec["result"]).read_text())
        Path(spec["rknn"]).replace(out_dir / RKNN_NAME)
        if spec["step1_dir"]:
            Path(spec["step1_dir"]).replace(out_dir / STEP1_DIR)
    return run, result


Infer = Callable[[list[dict[str, np.ndarray]]], list[list[np.ndarray]]]


def simulate_model(folder: Path, model: onnx.ModelProto, feed: dict[str, np.ndarray], target: str,
                   layer_dumps: bool = False, options: dict | None = None) -> tuple[dict, Path]:
    """An in-memory float16 `model` and one `feed` written into `folder`, built and simulated as
    build_and_simulate does (log in `folder`/rknn.log): its result, and the folder holding model.rknn
    (and any snapshot)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "model.onnx"
    onnx.save(model, str(onnx_path))
    samples = {}
    for j, (name, value) in enumerate(feed.items()):
        samples[name] = folder / f"input-{j}.npy"
        np.save(samples[name], value)
    out_dir = folder / "rknn"
    job = ToolkitJob(onnx_path, target, tuple(i.name for i in model.graph.input),
                     tuple(o.name for o in model.graph.output), options=options or {})
    _, result = build_and_simulate(job, out_dir, [samples], folder / "rknn.log", layer_dumps=layer_dumps)
    return result, out_dir


@contextmanager
def serving_simulator(job: ToolkitJob, out_dir: Path, log: Path, on_tick: Callable | None = None) -> Iterator[Infer]:
    """Build `job` as build_and_simulate does, then keep the simulator up: yields infer([feed, ...]) ->
    [[output, ...], ...] (graph inputs by name, outputs in graph order). The built model lands in
    `out_dir`/model.rknn when the block ends without error. BuildFailed if the toolkit fails or dies."""
    (out_dir / "simulator").mkdir(parents=True, exist_ok=True)
    # A socket path must stay under 108 bytes: it goes in the system's temp folder, not the build folder.
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=out_dir.resolve()) as scratch, \
            tempfile.TemporaryDirectory(prefix="rkconvert-") as sockets:
        address = str(Path(sockets) / "simulator.sock")
        spec = {**_worker_spec(job, Path(scratch), out_dir, [], False), "serve": address}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(address)
            server.listen(1)
            server.settimeout(0.5)
            child = _start(spec, Path(scratch), log)
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
        Path(spec["rknn"]).replace(out_dir / RKNN_NAME)


def _accept(server: socket.socket, child: Child, on_tick: Callable | None) -> Connection:
    """The worker's connection once its build is done; BuildFailed if it ends first."""
    while True:
        try:
            sock, _ = server.accept()
            return Connection(sock.detach())
        except socket.timeout:
            if child.poll(on_tick):
                raise child.failure() if child.returncode else BuildFailed(
                    f"{child.what} ended without serving the simulator (see {child.log})")
