"""Stage `reference`: ONNX Runtime's outputs of the rewritten graph on the check inputs.

Check inputs are Gaussian stand-ins (calib_data/check_inputs.py), or held-out inputs recorded along
the sampler's trajectories (a `checkset` stage), which a quantized build must be judged on: noise
is not what the calibrated ranges were fitted to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calib_data.check_inputs import check_inputs, check_timesteps
from calib_data.dataset_writer import read_samples
from converter.builds.build_dir import StageOutput, StageResult
from converter.builds.stage_run import StageRunner
from converter.builds.stages.calib import Calibration
from converter.builds.stages.export import Exported
from converter.builds.stages.passes import Rewritten
from converter.common import onnx_files, onnx_runtime
from converter.common.errors import BuildFailed
from converter.models.unet_interface import index_bounds, specs_from_json


@dataclass(frozen=True)
class Reference(StageOutput):
    check_inputs: str  # gaussian | trajectories
    timesteps: list[float]
    samples: list[dict[str, Path]]  # per check sample: graph input name -> .npy
    outputs: list[dict[str, Path]]  # per check sample: graph output name -> ONNX Runtime's .npy

    @classmethod
    def read(cls, record: StageResult) -> Reference:
        meta, root = record.meta, record.path
        return cls(record, meta["check_inputs"], meta["timesteps"],
                   [{k: root / v for k, v in s.items()} for s in meta["samples"]],
                   [{k: root / v for k, v in o.items()} for o in meta["outputs"]])

    def feed(self, index: int = 0) -> dict[str, np.ndarray]:
        """The graph inputs of check sample `index`."""
        return {name: np.load(path) for name, path in self.samples[index].items()}


def stage(runner: StageRunner, export: Exported, passes: Rewritten, checkset: Calibration | None, samples: int,
          seed: int, guidance_scale: float) -> Reference:
    """ONNX Runtime's outputs of `passes` on `samples` check inputs: Gaussian, or the held-out `checkset`."""
    return Reference.read(runner.run(
        "reference", "ONNX Runtime on check inputs", {"samples": samples, "seed": seed, "guidance_scale": guidance_scale},
        [passes] + ([checkset] if checkset else []),
        lambda tmp: run(export, passes, checkset, samples, seed, guidance_scale, tmp)))


def run(export: Exported, passes: Rewritten, checkset: Calibration | None, samples: int, seed: int,
        guidance_scale: float, tmp: Path) -> dict:
    """`guidance_scale`: the deployed one, whose embedding an LCM UNet's gaussian check inputs take (the
    family's fixed inputs)."""
    for sub in ("inputs", "outputs"):
        (tmp / sub).mkdir()
    saved, outputs = [], []
    try:
        if checkset is not None:
            graph_feeds, timesteps = read_samples(checkset.path)
        else:
            to_graph = passes.feeder()
            signature = export.signature
            fixed = signature.fixed_inputs(guidance_scale) if signature else None
            bounds = index_bounds(onnx_files.load(export.onnx, with_weights=False))
            graph_feeds = [to_graph(f) for f in check_inputs(specs_from_json(export.inputs), samples, seed, fixed,
                                                             bounds)]
            timesteps = check_timesteps(samples)
        session = onnx_runtime.session(passes.onnx)
        for i, graph in enumerate(graph_feeds):
            saved.append(_save(tmp, "inputs", i, graph))
            outputs.append(_save(tmp, "outputs", i, onnx_runtime.run(session, graph)))
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
        raise BuildFailed(f"ONNX Runtime cannot run {passes.onnx}: {str(e).splitlines()[0]}") from None
    return {"check_inputs": "trajectories" if checkset else "gaussian", "timesteps": timesteps,
            "samples": saved, "outputs": outputs}


def _save(root: Path, sub: str, index: int, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    names = {}
    for name, value in arrays.items():
        rel = f"{sub}/{index}-{name}.npy"
        np.save(root / rel, value)
        names[name] = rel
    return names
