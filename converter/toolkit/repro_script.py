"""repro.py: the reduced failure as a script that needs rknn-toolkit2 alone (to report upstream)."""

from __future__ import annotations

from pathlib import Path

from converter.toolkit.driver import toolkit_version
from converter.toolkit.failure import Failure
from converter.toolkit.job import ToolkitJob

_TEMPLATE = '''"""{title}

Reduced by `rkconvert diagnose` from {source} ({before} -> {after} nodes).
Run beside repro.onnx with rknn-toolkit2 {toolkit} installed:  python repro.py
Expected: {expected}
"""
import sys

from rknn.api import RKNN

rknn = RKNN(verbose=True)
if rknn.config(target_platform={target!r}{config}) != 0:
    sys.exit("config() refused")
if rknn.load_onnx(model="repro.onnx") != 0:
    sys.exit("load_onnx() failed")
if rknn.build(do_quantization={quantized!r}{dataset}) != 0:
    sys.exit("build() failed")
{inference}print("built")
'''

_INFERENCE = '''import numpy as np
import onnxruntime

feed = dict(np.load("repro-input.npz"))
names = [i.name for i in onnxruntime.InferenceSession("repro.onnx").get_inputs()]
if rknn.init_runtime() != 0:
    sys.exit("init_runtime() failed")
outputs = rknn.inference(inputs=[feed[n] for n in names], data_format=["nchw"] * len(names))
expected = onnxruntime.InferenceSession("repro.onnx").run(None, feed)
for got, want in zip(outputs, expected):
    err = np.sqrt(np.mean((got.astype(np.float64) - want) ** 2))
    print(f"output PSNR against onnxruntime: {20 * np.log10(np.abs(want).max() / err):.1f} dB")
'''


def write(folder: Path, failure: Failure, title: str, source: str, before: int, after: int, job: ToolkitJob) -> Path:
    """repro.py in `folder`: the toolkit's calls for `job` (its graph is repro.onnx; repro-dataset.txt and
    repro-input.npz beside it when needed)."""
    text = _TEMPLATE.format(
        title=title, source=source, before=before, after=after, toolkit=toolkit_version(),
        expected=failure.describe(), target=job.target,
        config="".join(f", {k}={v!r}" for k, v in job.config().items()), quantized=job.quantized,
        dataset=f', dataset="{job.dataset.name}"' if job.dataset else "",
        inference=_INFERENCE if failure.kind == "accuracy" else "")
    path = folder / "repro.py"
    path.write_text(text)
    return path
