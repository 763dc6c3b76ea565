"""LCM-distilled UNets (config time_cond_proj_dim) keep their guidance embedding: traced as the .rknn's
`timestep_cond` input, checked against what the model computes with it, calibrated and drawn with the embedding
of the guidance scale, on the host and by the board runner."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from calib_data.dataset_writer import read_samples
from converter.board.samplers import guidance_embedding
from converter.common import onnx_runtime
from converter.imaging.evaluation import psnr
from tests.conftest import as_numpy, rkconvert, save_tiny_pipeline, tiny_unet, torch_output, unet_inputs
from tests.test_release import runner_against_generate

EMBEDDING = 32


@pytest.mark.parametrize("scale", [1.0, 2.0, 8.5])
@pytest.mark.parametrize("dim", [32, 33, 256])
def test_the_guidance_embedding_is_diffusers(scale, dim):
    from diffusers import StableDiffusionPipeline

    expected = StableDiffusionPipeline.get_guidance_scale_embedding(None, torch.tensor([scale - 1.0]), dim).numpy()
    # The angles reach (scale - 1) x 1000 rad: one float32 ulp of a frequency there moves a sine by ~1e-4.
    np.testing.assert_allclose(guidance_embedding(scale, dim), expected, rtol=0, atol=1e-3)


@pytest.fixture(scope="module")
def lcm_build(tmp_path_factory):
    work = tmp_path_factory.mktemp("lcm")
    unet = tiny_unet(time_cond_proj_dim=EMBEDDING)
    torch.nn.init.normal_(unet.time_embedding.cond_proj.weight, std=0.5)  # diffusers zero-initialises it
    save_tiny_pipeline(work / "tiny-lcm", unet, schedule="lcm-4step")
    result = rkconvert("build", "--target", "rk3588", "--model", "tiny-lcm", "--resolution", "64",
                       "--layer-report", "off", "--image-check", "off", cwd=work)
    return work, result, work / "build" / "tiny-lcm-rk3588", unet


def test_the_rknn_takes_the_guidance_embedding_and_the_check_sees_it(lcm_build):
    work, result, out, unet = lcm_build
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert "timestep_cond" in [t["name"] for t in report["rknn_file"]["inputs"]]
    assert report["output_psnr_db"] >= 50
    # The traced graph computes what the model computes with the embedding (float32: 1e-4 of the range), and
    # the embedding matters: without it the UNet's output is another.
    inputs = {**unet_inputs(unet), "timestep_cond": torch.from_numpy(guidance_embedding(7.5, EMBEDDING))}
    expected = torch_output(unet, inputs)
    session = onnx_runtime.session(out / "stages" / "export" / "model.onnx")
    got = onnx_runtime.run(session, as_numpy(inputs))["out_sample"]
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    dropped = torch_output(unet, {k: v for k, v in inputs.items() if k != "timestep_cond"})
    assert np.abs(dropped - expected).max() > 100 * np.abs(got - expected).max()
    # The check inputs carry the embedding of the deployed guidance scale (the default schedule's 7.5), and the
    # .rknn's output on them is diffusers' UNet's with that timestep_cond.
    reference = out / "stages" / "reference"
    fed = {p.name[2:-4]: np.load(p) for p in (reference / "inputs").glob("0-*.npy")}
    np.testing.assert_array_equal(fed["timestep_cond"], guidance_embedding(7.5, EMBEDDING))
    timestep = json.loads((reference / "stage.json").read_text())["meta"]["timesteps"][0]
    diffusers_output = torch_output(unet, {"sample": torch.from_numpy(fed["sample"]),
                                           "timestep": torch.tensor([timestep]),
                                           "encoder_hidden_states": torch.from_numpy(fed["encoder_hidden_states"]),
                                           "timestep_cond": torch.from_numpy(fed["timestep_cond"])})
    assert psnr(np.load(out / "stages" / "rknn" / "simulator" / "0-0.npy"), diffusers_output) >= 60


def test_a_trace_that_drops_the_embedding_is_refused(tmp_path):
    """What tracing without timestep_cond makes of an LCM UNet (diffusers then skips cond_proj): three inputs,
    which the export stage refuses against the config's four."""
    from converter.common.errors import UserError
    from converter.models.family import CORE, Signature
    from converter.models.unet_interface import check_unet

    unet = tiny_unet(time_cond_proj_dim=EMBEDDING)
    signature = Signature.of_config(unet.config, 64)
    inputs = signature.example_inputs()
    with torch.no_grad():
        torch.onnx.export(unet, tuple(inputs[n] for n in CORE), str(tmp_path / "dropped.onnx"),
                          kwargs={"return_dict": False}, input_names=list(CORE), opset_version=17, dynamo=False)
    with pytest.raises(UserError, match="its config asks for sample, timestep, encoder_hidden_states, timestep_cond: "
                                        "an input was dropped in tracing"):
        check_unet(onnx.load(str(tmp_path / "dropped.onnx")), tmp_path / "dropped.onnx", signature.names)


def test_calibration_records_the_embedding_once_per_step(lcm_build, tmp_path):
    work, _, _, _ = lcm_build
    result = rkconvert("calib", "--target", "rk3588", "--model", "tiny-lcm", "--resolution", "64",
                       "--schedule", "lcm-4step", "--samples", "4", "--trajectories", "1", "--out", str(tmp_path / "c"),
                       cwd=work)
    assert result.returncode == 0, result.stderr
    stage = next((tmp_path / "c" / "stages").glob("calib*"))
    feeds, timesteps = read_samples(stage)
    assert len(feeds) == 4 and len(set(timesteps)) == 4  # LCM: no unconditional pass, one input per step
    for feed in feeds:  # the schedule's guidance for an LCM-distilled UNet (8), not its CFG scale (1: none)
        np.testing.assert_allclose(feed["timestep_cond"], guidance_embedding(8.0, EMBEDDING), atol=1e-3)


def test_the_board_runner_draws_an_lcm_bundle_as_generate_does(lcm_build, tmp_path):
    work, result, out, _ = lcm_build
    assert result.returncode == 0, result.stderr
    drawing = ("--prompt", "a red circle on the left", "--seed", "5", "--steps", "2", "--guidance-scale", "8.5")
    image_psnr, timing = runner_against_generate(out, drawing, tmp_path, work)
    assert image_psnr >= 40 and len(timing["unet_step_seconds"]) == 2  # one UNet pass a step: no CFG
