"""--vae: an AutoencoderKL (a diffusers folder, or a VAE-only file in the LDM layout) or an AutoencoderTiny in place
of a tiny pipeline's own VAE: its decoder built, checked, shipped and drawn by the board runner; a VAE of another
latent width refused in one line with nothing written."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from converter.board.manifest import Manifest, VaeUsed
from converter.imaging.evaluation import psnr
from tests.conftest import error_lines, rkconvert, save_tiny_pipeline, tiny_unet
from tests.test_release import _runner, _unpack
from tools.make_single_file import vae_to_ldm


def _kl(latent_channels: int = 4):
    from diffusers import AutoencoderKL

    torch.manual_seed(7)  # not the pipeline's own VAE (calib_data.recorder.tiny_vae, seed 0)
    # 32 norm groups: what a VAE-only LDM file is read with (models/ldm_layout.py)
    return AutoencoderKL(block_out_channels=[32] * 4, down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=latent_channels,
                         norm_num_groups=32, layers_per_block=1).eval()


def _tiny():
    from diffusers import AutoencoderTiny

    torch.manual_seed(8)
    return AutoencoderTiny(encoder_block_out_channels=(16, 16, 16, 16), decoder_block_out_channels=(16, 16, 16, 16),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1)).eval()


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    """A tiny pipeline and three VAEs for it: {name: (path, the VAE)}."""
    from safetensors.torch import save_file

    work = tmp_path_factory.mktemp("vae")
    save_tiny_pipeline(work / "tiny-pipeline")
    kl, tiny = _kl(), _tiny()
    kl.save_pretrained(work / "kl-vae")
    save_file({k.removeprefix("first_stage_model."): v.contiguous() for k, v in vae_to_ldm(kl).items()},
              work / "kl-vae-ldm.safetensors")
    tiny.save_pretrained(work / "taesd")
    return work, {"kl-vae": kl, "kl-vae-ldm.safetensors": kl, "taesd": tiny}


def _decoded(vae, latents: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return vae.decode(latents, return_dict=False)[0].numpy()


@pytest.mark.parametrize("given", ["kl-vae", "kl-vae-ldm.safetensors", "taesd"])
def test_the_pipeline_folder_decodes_with_the_given_vae(vaes, given, tmp_path, monkeypatch):
    from converter.models.model_source import resolve
    from converter.models.pipeline_models import load_vae
    from converter.models.vae_swap import Vae

    work, made = vaes
    monkeypatch.setenv("RKCONVERT_CACHE", str(tmp_path))
    source = resolve(str(work / "tiny-pipeline"), vae=Vae.parse(str(work / given)))
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    swapped, own = load_vae(source.path), load_vae(work / "tiny-pipeline")
    expected = _decoded(made[given], latents)
    np.testing.assert_allclose(_decoded(swapped, latents), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert np.abs(_decoded(own, latents) - expected).max() > 0.1 * np.abs(expected).max()  # another VAE
    assert json.loads((source.path / "model_index.json").read_text())["vae"] == ["diffusers", type(made[given]).__name__]


@pytest.fixture(scope="module", params=["kl-vae", "taesd"])
def vae_build(vaes, request):
    work, made = vaes
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RKCONVERT_CACHE", str(work / "cache"))
        result = rkconvert("build", "--target", "rk3588", "--model", "tiny-pipeline", "--vae", request.param,
                           "--resolution", "64", "--npu-models", "vae_decoder", "--layer-report", "off",
                           "--image-check", "off", cwd=work)
    return work, request.param, made[request.param], result, work / "build" / f"tiny-pipeline+{request.param}-rk3588"


def test_the_decoder_of_the_given_vae_is_built_checked_shipped_and_drawn(vae_build, tmp_path):
    from diffusers import StableDiffusionPipeline

    from converter.common import onnx_runtime

    work, given, vae, result, out = vae_build
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["vae"]["file"] == given and report["vae"]["kind"] == type(vae).__name__
    assert report["npu_models"]["vae_decoder"]["on"] == "npu"
    assert report["npu_models"]["vae_decoder"]["output_psnr_db"] >= 40
    # The decoder traced is the given VAE's: ONNX Runtime on it equals diffusers' decode.
    latents = np.random.default_rng(4).standard_normal((1, 4, 8, 8)).astype(np.float32)
    session = onnx_runtime.session(out / "stages" / "pipeline-models" / "vae_decoder.onnx")
    got = onnx_runtime.run(session, {"latents": latents})["image"]
    expected = _decoded(vae, torch.from_numpy(latents))
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    # Shipped, named in the manifest, and drawn by the board runner with its .rknn (float16, in the simulator) as
    # diffusers' own pipeline draws with that VAE (float32).
    assert rkconvert("release", str(out), "--out", str(tmp_path / "bundle.tar.gz"), cwd=work).returncode == 0
    with tarfile.open(tmp_path / "bundle.tar.gz", "r:gz") as tar:
        manifest = Manifest.loads(tar.extractfile("bundle/manifest.json").read())
    assert manifest.vae == VaeUsed(**report["vae"])
    ran = _runner(_unpack(tmp_path / "bundle.tar.gz", tmp_path / "bundle"), "--simulate", str(out), "--prompt",
                  "a red circle on the left", "--seed", "5", "--steps", "2", "--out", str(tmp_path / "run"))
    assert ran.returncode == 0, ran.stderr
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    assert timing["on"]["vae_decoder"] == "npu"
    pipe = StableDiffusionPipeline.from_pretrained(report["pipeline"], safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        drawn = pipe("a red circle on the left", height=64, width=64, num_inference_steps=2,
                     guidance_scale=timing["guidance_scale"], generator=torch.Generator().manual_seed(5),
                     output_type="np").images[0]
    expected = np.clip(np.round(drawn * 255), 0, 255).astype(np.uint8)
    assert psnr(np.asarray(Image.open(tmp_path / "run" / timing["image"])), expected) >= 35


def test_a_vae_of_other_latents_is_refused_in_one_line(vaes, tmp_path, monkeypatch):
    work, _ = vaes
    _kl(latent_channels=8).save_pretrained(tmp_path / "wide-vae")
    monkeypatch.setenv("RKCONVERT_CACHE", str(tmp_path / "cache"))
    result = rkconvert("build", "--target", "rk3588", "--model", str(work / "tiny-pipeline"), "--vae",
                       str(tmp_path / "wide-vae"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert error_lines(result) == [f"rkconvert: error: --vae {tmp_path / 'wide-vae'}: its latents have 8 channels, "
                                   "the pipeline's 4 (a VAE for another model family)"]
    assert not (tmp_path / "out").exists() and list((tmp_path / "cache" / "derived").iterdir()) == []


def test_a_folder_that_is_no_vae_is_refused_when_the_option_is_read(tmp_path):
    from converter.common.errors import UserError
    from converter.models.vae_swap import Vae

    tiny_unet().save_pretrained(tmp_path / "a-unet")
    (tmp_path / "empty").mkdir()
    for folder, why in (("a-unet", "a UNet2DConditionModel; rkconvert builds AutoencoderKL and AutoencoderTiny "
                                   "decoders"),
                        ("empty", "no readable config.json")):
        with pytest.raises(UserError) as refused:
            Vae.parse(str(tmp_path / folder))
        assert str(refused.value).startswith(f"--vae {tmp_path / folder}: {why}")
