"""One toolkit run on one ONNX graph, in a child process, ending in a Failure or in None (it worked).

A subgraph's inputs are tensors inside the model it was cut from: their values are those tensors' in
that model (`source`) on its recorded feeds (tensor_store.py), so a candidate sees what it would see in
place (the accuracy check compares with ONNX Runtime on those values; a quantized build calibrates on them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from converter.common import onnx_runtime
from converter.common.accuracy import compare
from converter.common.errors import BuildFailed
from converter.diagnose.tensor_store import TensorStore
from converter.toolkit.failure import Failure, accuracy, classify
from converter.toolkit import driver
from converter.toolkit.job import ToolkitSettings


@dataclass(frozen=True)
class Probe:
    toolkit: ToolkitSettings  # target, dtype and further config() keywords of every toolkit run
    budget_s: float
    source: str  # the full graph's ONNX
    feeds: list[str]  # .npz of the full graph's inputs: [0] the check input, then calibration inputs
    min_psnr: float | None = None  # set: also run the simulator and judge the output

    @property
    def target(self) -> str:
        return self.toolkit.target


def feeds_for(model: onnx.ModelProto, store: TensorStore) -> list[dict[str, np.ndarray]]:
    """Each recorded feed of the full graph, as the values `model`'s inputs take in it."""
    names = [i.name for i in model.graph.input]
    return [store.values(names, i) for i in range(len(store))]


def _write_samples(feeds: list[dict[str, np.ndarray]], folder: Path) -> list[dict[str, Path]]:
    samples = []
    for i, feed in enumerate(feeds):
        sample = {}
        for j, (name, value) in enumerate(feed.items()):
            sample[name] = folder / f"{i}-{j}.npy"
            np.save(sample[name], value)
        samples.append(sample)
    return samples


def run(onnx_path: Path, probe: Probe, folder: Path, store: TensorStore | None = None) -> Failure | None:
    """Build `onnx_path`, a subgraph of `probe.source`, as `probe` says (log in `folder`/toolkit.log); the
    Failure, or None. Its inputs' values come from `store` (one is made in `folder` when not given)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(onnx_path), load_external_data=False)
    inputs, outputs = [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    store = store or TensorStore(Path(probe.source), probe.feeds, folder / "values")
    feeds = feeds_for(model, store) if probe.min_psnr is not None or probe.toolkit.quantized else []
    samples = _write_samples(feeds, folder)
    dataset = None
    if probe.toolkit.quantized:
        dataset = folder / "dataset.txt"
        dataset.write_text("".join(" ".join(str(p) for p in s.values()) + "\n" for s in samples[1:] or samples))
    start = time.monotonic()
    try:
        _, result = driver.build_and_simulate(probe.toolkit.job(onnx_path, inputs, outputs, dataset), folder / "rknn",
                                              samples[:1] if probe.min_psnr is not None else [],
                                              folder / "toolkit.log", budget_s=probe.budget_s)
    except BuildFailed as e:
        if e.ending is None:
            raise
        return classify(e.ending)
    if probe.min_psnr is None:
        return None
    reference = onnx_runtime.run(onnx_runtime.session(onnx_path), feeds[0])
    sim = np.concatenate([np.load(p).ravel() for p in result["outputs"][0]])
    ref = np.concatenate([reference[n].ravel() for n in outputs])
    psnr = compare(sim, ref)["psnr_db"]
    return accuracy(psnr, probe.min_psnr, time.monotonic() - start) if psnr < probe.min_psnr else None
