"""Turn the inputs a user gives the UNet into the inputs the rewritten graph takes.

Passes that move work to the host (graph_passes.framework.HostProgram) leave small ONNX models
behind; they run here in order, each adding its outputs to the feed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converter.common import onnx_runtime


class GraphFeeder:
    def __init__(self, programs: list[Path], graph_inputs: list[str]):
        self.sessions = [onnx_runtime.session(p) for p in programs]
        self.graph_inputs = graph_inputs

    def __call__(self, model_feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = dict(model_feed)
        for sess in self.sessions:
            feed.update(onnx_runtime.run(sess, feed))
        return {name: feed[name] for name in self.graph_inputs}
