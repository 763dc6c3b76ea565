"""Stage `reference`: ONNX Runtime's outputs of the rewritten graph on the check inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calib_data.check_inputs import check_inputs, check_timesteps

from .. import onnx_runtime
from ..build_dir import StageResult
from ..build_request import BuildRequest
from ..errors import BuildFailed
from ..host_programs import graph_feed
from ..unet_interface import specs_from_json


def run(req: BuildRequest, export: StageResult, passes: StageResult, tmp: Path) -> dict:
    onnx_path = passes.path / passes.meta["onnx"]
    programs = [passes.path / p for p in passes.meta["host_programs"]]
    graph_input_names = list(passes.meta["inputs"])
    feeds = check_inputs(specs_from_json(export.meta["inputs"]), req.check_samples, req.seed)
    for sub in ("inputs", "outputs"):
        (tmp / sub).mkdir()
    samples, outputs = [], []
    try:
        session = onnx_runtime.session(onnx_path)
        for i, feed in enumerate(feeds):
            graph = graph_feed(feed, programs, graph_input_names)
            samples.append(_save(tmp, "inputs", i, graph))
            outputs.append(_save(tmp, "outputs", i, onnx_runtime.run(session, graph)))
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
        raise BuildFailed(f"ONNX Runtime cannot run {onnx_path}: {str(e).splitlines()[0]}") from None
    return {"timesteps": check_timesteps(req.check_samples), "samples": samples, "outputs": outputs}


def feed(reference: StageResult, index: int = 0) -> dict[str, np.ndarray]:
    """The graph inputs of check sample `index`, as saved by this stage."""
    return {name: np.load(reference.path / rel) for name, rel in reference.meta["samples"][index].items()}


def _save(root: Path, sub: str, index: int, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    names = {}
    for name, value in arrays.items():
        rel = f"{sub}/{index}-{name}.npy"
        np.save(root / rel, value)
        names[name] = rel
    return names
