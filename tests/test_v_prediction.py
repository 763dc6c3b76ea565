"""v-prediction (SD 2.x at 768 px and its fine-tunes): set with --prediction-type where the files cannot say it,
and carried into the scheduler config that the host's pipeline (diffusers' own), calibration and the board runner's
samplers read. The numpy samplers take diffusers' v steps one for one (test_board_parts.py); here a tiny pipeline
is drawn by the runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from calib_data.schedules import prediction_of
from converter.imaging.evaluation import psnr
from tests.conftest import rkconvert, save_tiny_pipeline
from tests.test_release import _runner, _unpack

PROMPT, SEED, STEPS, GUIDANCE = "a red circle on the left", 5, 4, 3.0


@pytest.fixture(scope="module")
def v_build(tmp_path_factory):
    work = tmp_path_factory.mktemp("v-prediction")
    save_tiny_pipeline(work / "tiny-pipeline")  # its scheduler config says epsilon
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RKCONVERT_CACHE", str(work / "cache"))
        result = rkconvert("build", "--target", "rk3588", "--model", "tiny-pipeline", "--prediction-type",
                           "v_prediction", "--resolution", "64", "--npu-models", "none", "--layer-report", "off",
                           "--image-check", "off", cwd=work)
    return work, result, work / "build" / "tiny-pipeline-rk3588"


def _diffusers_image(folder) -> np.ndarray:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        image = pipe(PROMPT, height=64, width=64, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                     generator=torch.Generator().manual_seed(SEED), output_type="np").images[0]
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def test_the_runner_draws_what_diffusers_v_sampler_draws(v_build, tmp_path):
    work, result, out = v_build
    assert result.returncode == 0, result.stderr
    folder = json.loads((out / "report.json").read_text())["pipeline"]
    assert prediction_of(work / "tiny-pipeline") == "epsilon" and prediction_of(Path(folder)) == "v_prediction"
    # The board's numpy sampler with the .rknn (float16) draws diffusers' own v-prediction picture (the host's
    # pipeline is diffusers': generate draws it so), and not the one that reads the same UNet's output as noise.
    assert rkconvert("release", str(out), "--out", str(tmp_path / "v.tar.gz"), cwd=work).returncode == 0
    ran = _runner(_unpack(tmp_path / "v.tar.gz", tmp_path / "v"), "--simulate", str(out), "--prompt", PROMPT,
                  "--seed", str(SEED), "--steps", str(STEPS), "--guidance-scale", str(GUIDANCE),
                  "--out", str(tmp_path / "run"))
    assert ran.returncode == 0, ran.stderr
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    drawn = np.asarray(Image.open(tmp_path / "run" / timing["image"]))
    as_v, as_noise = _diffusers_image(folder), _diffusers_image(work / "tiny-pipeline")
    assert psnr(drawn, as_v) >= 35
    assert psnr(drawn, as_noise) <= psnr(drawn, as_v) - 10
