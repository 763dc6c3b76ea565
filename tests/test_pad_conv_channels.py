"""pad_conv_channels: equal under ONNX Runtime; the tiny UNet rk3562's w8a16 compiler died on builds with it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from rich.console import Console

from converter.builds.builder import build
from converter.builds.request import BuildRequest, CalibSettings, Checks, HybridSettings, PassChoice
from converter.common import onnx_runtime
from converter.common.errors import BuildFailed
from converter.common.progress import Progress
from converter.models import tracing
from converter.models.model_source import resolve
from graph_passes import CATALOGUE
from targets import get_chip
from tests.conftest import TINY_RESOLUTION, as_numpy, tiny_unet, unet_inputs

PASS = CATALOGUE["pad_conv_channels"]


def test_outputs_equal_under_onnxruntime(tmp_path):
    unet = tiny_unet()
    tracing.trace(unet, TINY_RESOLUTION, tmp_path / "unet.onnx")
    before = onnx.load(str(tmp_path / "unet.onnx"))
    after, report, host = PASS.run(before)
    assert not host and not report.skipped
    assert report.rewrites == ["/conv_in/Conv: 4 -> 32 channels computed as 32 -> 32",
                               "/conv_out/Conv: 32 -> 4 channels computed as 32 -> 8"]
    assert PASS.run(after)[1].rewrites == []  # nothing narrow is left
    feed = as_numpy(unet_inputs(unet))
    ref = onnx_runtime.run(onnx_runtime.session(before), feed)["out_sample"]
    out = onnx_runtime.run(onnx_runtime.session(after), feed)["out_sample"]
    assert out.shape == ref.shape
    # Zero channels add exact zeros, but a wider Conv may sum in another order: float32 rounding.
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_runs_for_rk3562_w8a16_only():
    rk3562 = get_chip("rk3562")
    assert PASS.name in rk3562.passes_for(list(rk3562.passes), "w8a16")
    assert PASS.name not in rk3562.passes_for(list(rk3562.passes), "float16")
    assert PASS.name not in get_chip("rk3588").passes


def test_without_it_rk3562s_w8a16_compiler_dies_on_the_tiny_unet(tiny_folder, tmp_path):
    """The failure the pass is for, still there in the toolkit (the passing build: test_lowering's rk3562)."""
    req = BuildRequest(resolve(str(tiny_folder)), get_chip("rk3562"), tmp_path / "out", dtype="w8a16",
                       passes=PassChoice(skip=(PASS.name,)), checks=Checks(samples=2, layer_report="off"),
                       hybrid=HybridSettings(enabled=False), calib=CalibSettings(samples=4, trajectories=1))
    with pytest.raises(BuildFailed) as failed:
        build(req, Progress(Console(file=open(tmp_path / "progress.txt", "w"))))
    assert failed.value.ending.signal in ("SIGSEGV", "SIGABRT"), str(failed.value)
