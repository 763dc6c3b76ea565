"""An SDXL UNet (`addition_embed_type="text_time"`: `text_embeds` and `time_ids` in diffusers'
added_cond_kwargs) builds as any SD UNet: traced with both extra inputs, the size ids' sinusoid moved to the
host beside the timestep's, checked at its resolution's size ids. A UNet alone: drawing SDXL needs its
second text encoder (issue 46)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from converter.builds.finished import FinishedBuild
from converter.common import onnx_runtime
from converter.imaging.evaluation import psnr
from converter.reports.build_report import load_build
from tests.conftest import error_lines, rkconvert, tiny_unet, torch_output

POOLED = 24  # text_embeds' width: the second text encoder's projection (1280 in SDXL)
SDXL = {"addition_embed_type": "text_time", "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 6 * 8 + POOLED}


@pytest.fixture(scope="module")
def sdxl_build(tmp_path_factory):
    work = tmp_path_factory.mktemp("sdxl")
    unet = tiny_unet(**SDXL)
    torch.nn.init.normal_(unet.add_embedding.linear_1.weight, std=0.5)  # so the size ids move the output
    unet.save_pretrained(work / "tiny-sdxl")
    result = rkconvert("build", "--target", "rk3588", "--model", "tiny-sdxl", "--layer-report", "off", cwd=work)
    return result, work / "build" / "tiny-sdxl-rk3588", unet


def test_an_sdxl_unet_builds_and_computes_what_diffusers_computes(sdxl_build):
    result, out, unet = sdxl_build
    assert result.returncode == 0, result.stderr
    report = load_build(out)
    assert [t["name"] for t in report.rknn_file.inputs] == ["sample", "t_emb", "encoder_hidden_states",
                                                            "text_embeds", "time_ids_emb"]
    assert report.psnr_db >= 60
    assert report.delivered.host_programs == ["host/host_time_projection.onnx",
                                              "host/host_time_projection_time_ids.onnx"]
    # Diffusers' UNet on the check input: the pooled text as fed, the size ids those of a 64 px image (original,
    # crop at 0, target). ONNX Runtime on the rewritten graph, its host programs computing both projections,
    # computes it in float32 (1e-4 of the range), and other size ids move the output 100x more than that;
    # the .rknn in the simulator computes it in float16.
    reference = out / "stages" / "reference"
    fed = {p.name[2:-4]: np.load(p) for p in (reference / "inputs").glob("0-*.npy")}
    timestep = json.loads((reference / "stage.json").read_text())["meta"]["timesteps"][0]
    model_level = {"sample": fed["sample"], "timestep": np.array([timestep], np.float32),
                   "encoder_hidden_states": fed["encoder_hidden_states"], "text_embeds": fed["text_embeds"],
                   "time_ids": np.array([[64, 64, 0, 0, 64, 64]], np.float32)}

    def diffusers(time_ids):
        inputs = {name: torch.from_numpy(model_level[name]) for name in ("sample", "timestep", "encoder_hidden_states")}
        return torch_output(unet, {**inputs, "added_cond_kwargs": {"text_embeds": torch.from_numpy(fed["text_embeds"]),
                                                                     "time_ids": torch.from_numpy(time_ids)}})

    expected = diffusers(model_level["time_ids"])
    rewritten = FinishedBuild.open(out).passes
    graph_feed = rewritten.feeder()(model_level)
    np.testing.assert_array_equal(graph_feed["time_ids_emb"], fed["time_ids_emb"])
    got = onnx_runtime.run(onnx_runtime.session(rewritten.onnx), graph_feed)["out_sample"]
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    other = diffusers(model_level["time_ids"] * 16)
    assert np.abs(other - expected).max() > 100 * np.abs(got - expected).max()
    assert psnr(np.load(out / "stages" / "rknn" / "simulator" / "0-0.npy"), expected) >= 60


def test_what_needs_sdxls_pipeline_is_refused_in_one_line(sdxl_build, tmp_path):
    """Calibrating (a quantized build) and drawing run SD's pipeline, which cannot call an SDXL UNet: refused,
    with what does build, and nothing left behind."""
    work = sdxl_build[1].parents[1]
    result = rkconvert("build", "--target", "rk3588", "--model", str(work / "tiny-sdxl"), "--dtype", "w8a8",
                       "--out", str(tmp_path / "w8a8"), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and error_lines(result) == [
        f"rkconvert: error: {work / 'tiny-sdxl'}: an SDXL UNet; its calibration inputs come from SDXL's pipeline, "
        "which rkconvert does not run: build it as float16"]
    assert not (tmp_path / "w8a8").exists()
    folder = tmp_path / "sdxl-pipeline"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    result = rkconvert("build", "--target", "rk3588", "--model", "sdxl-pipeline", cwd=tmp_path)
    assert result.returncode == 2
    assert error_lines(result) == [
        "rkconvert: error: sdxl-pipeline/model_index.json: a StableDiffusionXLPipeline; rkconvert draws with SD "
        "1.x/2.x pipelines and builds an SDXL UNet alone: --model sdxl-pipeline/unet"]
    assert not (tmp_path / "build").exists()
