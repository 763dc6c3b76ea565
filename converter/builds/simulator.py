"""A finished toolkit build rebuilt in a serving simulator: the simulator only runs a model the toolkit
has just built (not a `.rknn` file), so the image check, `generate` and the board runner's `--simulate`
build the `.rknn` once more with the same jobs and run their denoising loops through it.

The rebuild must compute what the build did: its output on check sample 0 must equal the `rknn`
stage's (the two `.rknn` files differ in bytes: the toolkit stamps them).
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from converter.builds.stages.passes import Rewritten
from converter.builds.stages.reference import Reference
from converter.builds.stages.rknn import part_log
from converter.common.errors import BuildFailed
from converter.models.family import PIPELINE_MODELS
from converter.toolkit import driver
from converter.toolkit.job import ToolkitJob


@dataclass(frozen=True)
class BuiltModel:
    """A toolkit build: the jobs that made it, the graph and check inputs it was made from, and its
    simulator's output on check sample 0 (the first graph output), which a rebuild must reproduce."""

    passes: Rewritten
    reference: Reference
    jobs: list[ToolkitJob]  # one per part, in run order
    check_output: Path


@dataclass(frozen=True)
class PipelineModels:
    """What a model that draws runs on the NPU: its UNet, and its text encoder and VAE decoder where they were
    built too (build/npu_models.py); None: that part runs on the CPU."""

    unet: BuiltModel
    text_encoder: BuiltModel | None = None
    vae_decoder: BuiltModel | None = None

    @property
    def on_npu(self) -> list[str]:
        return ["unet", *(name for name in PIPELINE_MODELS if getattr(self, name) is not None)]


@contextmanager
def rebuilt_simulator(model: BuiltModel, log: Path, on_tick: Callable | None, scratch: Path) -> Iterator[driver.Infer]:
    """`model` rebuilt in a serving simulator, checked to compute what the build's did on check sample 0
    (BuildFailed if not); yields infer([feed]) -> [[out]]. A model in parts is a simulator per part,
    built in turn and kept up together, each fed the graph's inputs and the earlier parts' outputs by name."""
    jobs = model.jobs
    with ExitStack() as serving:
        parts = []
        for i, job in enumerate(jobs, start=1):
            parts.append(serving.enter_context(driver.serving_simulator(
                job, scratch / f"simulator-build-{i}", part_log(log, i, len(jobs)), on_tick)))

        def infer(feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
            tensors = [dict(f) for f in feeds]
            for job, part in zip(jobs, parts):
                outputs = part([{name: t[name] for name in job.inputs} for t in tensors])
                for t, values in zip(tensors, outputs):
                    t.update(zip(job.outputs, values))
            return [[t[name] for name in model.passes.outputs] for t in tensors]

        check = infer([model.reference.feed(0)])[0][0]
        built = np.load(model.check_output)
        if not np.array_equal(check, built):
            raise BuildFailed(f"the toolkit's rebuild of the .rknn computes another model: its output on check "
                              f"sample 0 differs from the build's by up to {np.abs(check - built).max():.3g}")
        yield infer
    for i in range(1, len(jobs) + 1):
        shutil.rmtree(scratch / f"simulator-build-{i}")
