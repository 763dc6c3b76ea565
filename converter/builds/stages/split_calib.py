"""Stage `split-calib` (a quantized build in parts): each part's calibration set, RKNN's dataset format.

The toolkit calibrates a part on that part's inputs. Those after the first are activations inside the
model: for every calibration sample, ONNX Runtime runs the parts before, in float32 (what the toolkit's
own float pass over the whole model would see there), and their outputs are kept beside the recorded
inputs. Part 1's set is the recorded one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter.builds.build_dir import StageOutput, StageResult
from converter.builds.stage_run import StageRunner
from converter.builds.stages.calib import Calibration
from converter.builds.stages.passes import Rewritten
from converter.builds.stages.split import Split
from converter.common import onnx_runtime
from converter.common.progress import Progress

DATASET = "dataset-part{}.txt"


@dataclass(frozen=True)
class PartCalibration(StageOutput):
    datasets: list[Path]  # what each part's toolkit build calibrates on, in run order
    count: int

    @classmethod
    def read(cls, record: StageResult) -> PartCalibration:
        return cls(record, [record.path / d for d in record.meta["datasets"]], record.meta["count"])


def stage(runner: StageRunner, rewritten: Rewritten, split: Split | None,
          calib: Calibration | None) -> Calibration | PartCalibration | None:
    """For a quantized build in parts, each part's calibration inputs; else `calib` as it is."""
    if split is None or calib is None:
        return calib
    return PartCalibration.read(runner.run(
        "split-calib", "each part's calibration inputs (ONNX Runtime on the parts before it)", {},
        [rewritten, split, calib], lambda tmp: run(rewritten.input_names, split, calib, runner.progress, tmp)))


def run(input_names: list[str], split: Split, calib: Calibration, progress: Progress, tmp: Path) -> dict:
    # paths relative to this stage's folder: ../calib/... holds before and after the folder's rename
    samples = [dict(zip(input_names, (os.path.relpath(calib.dataset.parent / f, tmp) for f in line.split())))
               for line in calib.dataset.read_text().splitlines() if line.strip()]
    for i, part in enumerate(split.parts[:-1], start=1):
        session = onnx_runtime.session(part.onnx)
        for j, sample in enumerate(samples):
            progress.note(f"part {i}: calibration sample {j + 1}/{len(samples)}")
            out = onnx_runtime.run(session, {name: np.load(tmp / sample[name]) for name in part.inputs})
            for k, name in enumerate(part.outputs):
                sample[name] = f"{j:05d}-part{i}-{k}.npy"
                np.save(tmp / sample[name], out[name])
        del session
    datasets = []
    for i, part in enumerate(split.parts, start=1):
        datasets.append(DATASET.format(i))
        lines = [" ".join(sample[name] for name in part.inputs) for sample in samples]
        (tmp / datasets[-1]).write_text("\n".join(lines) + "\n")
    return {"datasets": datasets, "count": len(samples)}
