"""Turn the inputs a user gives the UNet into the inputs the rewritten graph takes.

Passes that move work to the host (graph_passes.framework.HostProgram) leave small ONNX models
behind; they run here in order, each adding its outputs to the feed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import onnx_runtime


def graph_feed(model_feed: dict[str, np.ndarray], programs: list[Path], graph_inputs: list[str]) -> dict[str, np.ndarray]:
    feed = dict(model_feed)
    for program in programs:
        feed.update(onnx_runtime.run(onnx_runtime.session(program), feed))
    return {name: feed[name] for name in graph_inputs}
