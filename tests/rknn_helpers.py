"""Build an ONNX model with the real toolkit and run it in its simulator, for pass and report tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from converter.common import onnx_runtime
from converter.common.accuracy import compare
from converter.toolkit import driver
from targets import get_chip


def simulate(folder: Path, model: onnx.ModelProto, feed: dict[str, np.ndarray], layer_dumps: bool = False,
             chip: str = "rk3588", toolkit_config: dict | None = None):
    """(first output of the .rknn in the simulator, the folder holding model.rknn and any snapshot)."""
    result, out_dir = driver.simulate_model(folder, model, feed, get_chip(chip).name, layer_dumps, toolkit_config)
    return np.load(result["outputs"][0][0]), out_dir


def rknn_psnr(folder: Path, model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> float:
    """Output PSNR (dB) of the simulated .rknn against ONNX Runtime on the same model and feed."""
    out, _ = simulate(folder, model, feed)
    ref = onnx_runtime.run(onnx_runtime.session(model), feed)[model.graph.output[0].name]
    return compare(out, ref)["psnr_db"]
