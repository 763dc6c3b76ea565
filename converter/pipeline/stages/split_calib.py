"""Stage `split-calib` (a quantized build in parts): each part's calibration set, RKNN's dataset format.

The toolkit calibrates a part on that part's inputs. Those after the first are activations inside the
model: for every calibration sample, ONNX Runtime runs the parts before, in float32 (what the toolkit's
own float pass over the whole model would see there), and their outputs are kept beside the recorded
inputs. Part 1's set is the recorded one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from converter.pipeline.build_dir import StageResult
from converter.common import onnx_runtime
from converter.common.progress import Progress

DATASET = "dataset-part{}.txt"


def run(passes: StageResult, split: StageResult, calib: StageResult, progress: Progress, tmp: Path) -> dict:
    recorded = calib.path / calib.meta["dataset"]
    names = list(passes.meta["inputs"])
    # paths relative to this stage's folder: ../calib/... holds before and after the folder's rename
    samples = [dict(zip(names, (os.path.relpath(recorded.parent / f, tmp) for f in line.split())))
               for line in recorded.read_text().splitlines() if line.strip()]
    parts = split.meta["parts"]
    for i, part in enumerate(parts[:-1], start=1):
        session = onnx_runtime.session(split.path / part["onnx"])
        for j, sample in enumerate(samples):
            progress.note(f"part {i}: calibration sample {j + 1}/{len(samples)}")
            out = onnx_runtime.run(session, {name: np.load(tmp / sample[name]) for name in part["inputs"]})
            for k, name in enumerate(part["outputs"]):
                sample[name] = f"{j:05d}-part{i}-{k}.npy"
                np.save(tmp / sample[name], out[name])
        del session
    datasets = []
    for i, part in enumerate(parts, start=1):
        datasets.append(DATASET.format(i))
        lines = [" ".join(sample[name] for name in part["inputs"]) for sample in samples]
        (tmp / datasets[-1]).write_text("\n".join(lines) + "\n")
    return {"datasets": datasets, "count": len(samples)}
