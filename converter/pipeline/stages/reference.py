"""Stage `reference`: ONNX Runtime's outputs of the rewritten graph on the check inputs.

Check inputs are Gaussian stand-ins (calib_data/check_inputs.py), or held-out inputs recorded along
the sampler's trajectories (a `checkset` stage), which a quantized build must be judged on: noise
is not what the calibrated ranges were fitted to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calib_data.check_inputs import check_inputs, check_timesteps
from calib_data.dataset_writer import read_samples
from converter.pipeline.build_dir import StageResult
from converter.pipeline.host_programs import GraphFeeder
from converter.pipeline.request import BuildRequest
from converter.common import onnx_runtime
from converter.common.errors import BuildFailed
from converter.models.unet_interface import specs_from_json


def run(req: BuildRequest, export: StageResult, passes: StageResult, checkset: StageResult | None, tmp: Path) -> dict:
    onnx_path = passes.path / passes.meta["onnx"]
    for sub in ("inputs", "outputs"):
        (tmp / sub).mkdir()
    samples, outputs = [], []
    try:
        if checkset is not None:
            graph_feeds, timesteps = read_samples(checkset.path)
        else:
            to_graph = feeder(passes)
            graph_feeds = [to_graph(f) for f in check_inputs(specs_from_json(export.meta["inputs"]),
                                                             req.check_samples, req.seed)]
            timesteps = check_timesteps(req.check_samples)
        session = onnx_runtime.session(onnx_path)
        for i, graph in enumerate(graph_feeds):
            samples.append(_save(tmp, "inputs", i, graph))
            outputs.append(_save(tmp, "outputs", i, onnx_runtime.run(session, graph)))
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
        raise BuildFailed(f"ONNX Runtime cannot run {onnx_path}: {str(e).splitlines()[0]}") from None
    return {"check_inputs": "trajectories" if checkset else "gaussian", "timesteps": timesteps,
            "samples": samples, "outputs": outputs}


def feeder(passes: StageResult) -> GraphFeeder:
    """Model-level inputs (sample, timestep, ...) -> the rewritten graph's inputs."""
    return GraphFeeder([passes.path / p for p in passes.meta["host_programs"]], list(passes.meta["inputs"]))


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
