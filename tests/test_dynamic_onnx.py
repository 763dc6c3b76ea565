"""A UNet ONNX as people download it: exported as diffusers' conversion script exports one (batch 2, dynamic
batch, channels, height, width and text length, a timestep per batch item, opset 14). `--resolution` fixes
its shapes and it builds like a traced one."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from converter.builds.finished import FinishedBuild
from converter.common import onnx_runtime
from converter.reports.build_report import load_build
from tests.conftest import error_lines, rkconvert, tiny_unet, torch_output


@pytest.fixture(scope="module")
def dynamic_build(tmp_path_factory):
    work = tmp_path_factory.mktemp("dynamic")
    unet = tiny_unet()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(unet, (torch.randn(2, 4, 8, 8), torch.randn(2), torch.randn(2, 77, 32), False),
                          str(work / "unet.onnx"), input_names=["sample", "timestep", "encoder_hidden_states",
                                                               "return_dict"],
                          output_names=["out_sample"], opset_version=14, dynamo=False, do_constant_folding=True,
                          dynamic_axes={"sample": {0: "batch", 1: "channels", 2: "height", 3: "width"},
                                        "timestep": {0: "batch"}, "encoder_hidden_states": {0: "batch", 1: "sequence"}})
    result = rkconvert("build", "--target", "rk3588", "--model", "unet.onnx", "--resolution", "64",
                       "--layer-report", "off", cwd=work)
    return work, result, work / "build" / "unet-rk3588", unet


def test_a_dynamic_unet_is_fixed_at_the_resolution_and_builds(dynamic_build):
    work, result, out, unet = dynamic_build
    assert result.returncode == 0, result.stderr
    report = load_build(out)
    assert report.shapes_fixed == ("dynamic axes fixed: sample [1, 4, 8, 8], timestep [1], encoder_hidden_states "
                                   "[1, 77, 32], out_sample [1, 4, 8, 8]")
    assert report.psnr_db >= 60
    # ONNX Runtime on the fixed, rewritten graph computes what diffusers' UNet computes on the check input
    reference = out / "stages" / "reference"
    fed = {p.name[2:-4]: np.load(p) for p in (reference / "inputs").glob("0-*.npy")}
    timestep = json.loads((reference / "stage.json").read_text())["meta"]["timesteps"][0]
    model_level = {"sample": fed["sample"], "timestep": np.array([timestep], np.float32),
                   "encoder_hidden_states": fed["encoder_hidden_states"]}
    expected = torch_output(unet, {k: torch.from_numpy(v) for k, v in model_level.items()})
    rewritten = FinishedBuild.open(out).passes
    got = onnx_runtime.run(onnx_runtime.session(rewritten.onnx), rewritten.feeder()(model_level))["out_sample"]
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_a_dynamic_unet_needs_a_resolution_that_fits_what_it_fixes(dynamic_build, tmp_path):
    work = dynamic_build[0]
    result = rkconvert("build", "--target", "rk3588", "--model", str(work / "unet.onnx"), "--out", "x", cwd=tmp_path)
    assert result.returncode == 2 and error_lines(result) == [
        f"rkconvert: error: {work / 'unet.onnx'}: the UNet's inputs have dynamic dimensions; give --resolution to "
        "fix them (batch 1, 77 text tokens)"]
    assert not (tmp_path / "x").exists()
