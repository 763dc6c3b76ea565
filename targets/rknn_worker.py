"""Child-process side of the RKNN backend: the only code that imports `rknn`.

Run as `python -m targets.rknn_worker job.json` from a scratch directory (the toolkit writes
`check*.onnx` files into its working directory). Builds the `.rknn`, then runs every check sample
in the toolkit's simulator and saves the outputs; optionally dumps every layer (accuracy_analysis). A failing toolkit call exits non-zero after an
ERROR line; a crash inside the toolkit ends the process by a signal, which the parent reports.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from converter.child_process import ERROR, PHASE


def _call(phases: dict, name: str, fn, *args, **kwargs):
    print(f"{PHASE}{name}()", flush=True)
    start = time.monotonic()
    result = fn(*args, **kwargs)
    phases[name] = round(time.monotonic() - start, 3)
    if isinstance(result, int) and result != 0:
        print(f"{ERROR}{name}() returned {result}", flush=True)
        sys.exit(3)
    return result


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    from rknn.api import RKNN

    phases: dict[str, float] = {}
    rknn = RKNN(verbose=job.get("verbose", True))
    _call(phases, "config", rknn.config, target_platform=job["target"], **job["config"])
    _call(phases, "load_onnx", rknn.load_onnx, model=job["onnx"])
    dataset = job.get("dataset")
    _call(phases, "build", rknn.build, do_quantization=dataset is not None, dataset=dataset)
    _call(phases, "export_rknn", rknn.export_rknn, job["rknn"])
    outputs = []
    if job["samples"]:
        _call(phases, "init_runtime", rknn.init_runtime)
        out_dir = Path(job["outputs_dir"])
        for i, sample in enumerate(job["samples"]):
            feeds = [np.load(sample[name]) for name in job["inputs"]]
            result = _call(phases, f"inference[{i}]", rknn.inference, inputs=feeds,
                           data_format=["nchw"] * len(feeds))
            names = []
            for name, value in zip(job["outputs"], result):
                path = out_dir / f"{i}-{name}.npy"
                np.save(path, value)
                names.append(str(path))
            outputs.append(names)
    if job.get("snapshot_dir"):
        # Per-layer dumps of the first sample: 'golden' (the toolkit's own float run of its rewritten
        # graph) and 'simulator', plus its error table.
        paths = [job["samples"][0][name] for name in job["inputs"]]
        _call(phases, "accuracy_analysis", rknn.accuracy_analysis, inputs=paths, output_dir=job["snapshot_dir"])
    rknn.release()
    Path(job["result"]).write_text(json.dumps({"phases": phases, "outputs": outputs}))


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as e:
        print(f"{ERROR}{type(e).__name__}: {e}", flush=True)
        raise
