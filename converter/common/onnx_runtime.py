"""ONNX Runtime on the host: the reference every conversion is judged against."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def session(model: Path | onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # Basic (exact) rewrites only: the reference should compute what the graph says, in fp32.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    return dict(zip(names, sess.run(names, {k: v for k, v in feed.items() if k in wanted})))


def run_with_tensors(onnx_path: Path, feed: dict[str, np.ndarray], names: list[str], scratch: Path) -> dict[str, np.ndarray]:
    """Values of the intermediate tensors `names` (plus the outputs) for one feed; the graph marked with
    them is saved into `scratch` (emptied after)."""
    marked = beside_weights(with_outputs(onnx_path, names), onnx_path, scratch)
    try:
        return run(session(marked), feed)
    finally:
        for f in scratch.iterdir():
            f.unlink()


def with_outputs(onnx_path: Path, names) -> onnx.ModelProto:
    """The graph of `onnx_path` (its weights not read) with the tensors `names` as extra outputs."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names) if n not in present)
    return model


def beside_weights(model: onnx.ModelProto, onnx_path: Path, folder: Path) -> Path:
    """`model` (a rewrite of `onnx_path`'s graph) saved into `folder` under `onnx_path`'s name; a weights
    file kept beside the original (external data) is hard-linked, not copied (ONNX Runtime refuses a
    symlink that leads out of the model's folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for data in onnx_path.parent.glob(onnx_path.name + ".data"):
        os.link(data, folder / data.name)
    path = folder / onnx_path.name
    onnx.save(model, str(path))
    return path
