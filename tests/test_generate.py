"""Text to image through the `.rknn`: the image check of a build whose model can draw, and
`rkconvert generate`: on the trained demo, and on a tiny pipeline folder with seeded weights (no judge)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile

import numpy as np
from PIL import Image

from converter.imaging.evaluation import psnr, ssim
from converter.models import demo
from tests.conftest import TINY_EVALUATION, error_lines, rkconvert, save_tiny_pipeline
from tests.test_release import _runner, runner_against_generate


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_the_demo_build_draws_its_evaluation_set_as_asked_through_the_rknn(demo_build):
    result, out = demo_build
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["cpu_ops"] == 0  # group_norm_as_conv keeps the 2x2 stage's GroupNorms on the NPU
    images = report["images"]
    spec = json.loads((demo.PIPELINE / "rkconvert.json").read_text())["evaluation"]
    assert [r["prompt"] for r in images["rows"]] == [p["prompt"] for p in spec["prompts"]]
    summary = images["summary"]
    assert summary["reference_prompt_accuracy"] >= 0.9
    assert summary["rknn_prompt_accuracy"] >= 0.98 * summary["reference_prompt_accuracy"]
    grid = _png(out / images["grid"])
    assert grid.shape[0] > 128 * len(images["rows"]) and grid.shape[1] > 3 * 128
    folder = out / "images" / "evaluation"
    for row in images["rows"]:
        ref, rknn = _png(folder / row["reference"]), _png(folder / row["rknn"])
        assert row["psnr_db"] == psnr(rknn, ref) > 20
    assert "prompt accuracy" in result.stdout


def test_a_pipeline_build_draws_its_evaluation_set_with_both_unets(tiny_pipeline_build):
    work, result, out = tiny_pipeline_build
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    images = report["images"]
    assert [r["prompt"] for r in images["rows"]] == [p["prompt"] for p in TINY_EVALUATION["prompts"]]
    assert images["steps"] == 4 and "rknn_prompt_accuracy" not in images["summary"]  # no judge
    folder = out / "images" / "evaluation"
    for row in images["rows"]:
        ref, rknn = _png(folder / row["reference"]), _png(folder / row["rknn"])
        assert ref.shape == (64, 64, 3) and ref.std() > 0
        assert row["psnr_db"] == psnr(rknn, ref) > 25 and row["ssim"] == ssim(rknn, ref)
        # The float16 .rknn draws the reference's picture, not some picture: it is closer to its own
        # reference than to the other prompt's.
        other = next(r for r in images["rows"] if r is not row)
        assert psnr(rknn, ref) > psnr(rknn, _png(folder / other["reference"])) + 10
    grid = _png(out / images["grid"])
    assert grid.shape[0] >= 2 * 64 and grid.shape[1] >= 3 * 64
    assert "images: 2 prompts" in result.stderr + result.stdout
    assert report["pipeline"] == str((work / "tiny-pipeline").resolve())


# What transformers and diffusers print on their own when torchvision or accelerate is missing (neither is
# needed), and their weight-loading progress bars.
THIRD_PARTY = ("requires torchvision", "accelerate", "low cpu memory usage", "Loading weights", "[transformers]")


def test_a_pipeline_build_shows_no_third_party_noise(tiny_pipeline_build):
    _, result, _ = tiny_pipeline_build
    assert result.returncode == 0, result.stderr
    assert "images" in result.stdout  # the image check ran: the pipeline's text encoder and VAE were loaded
    for text in THIRD_PARTY:
        assert text not in result.stdout and text not in result.stderr, text


def test_generate_draws_with_both_unets_and_agrees_with_the_build(tiny_pipeline_build, tmp_path):
    _, _, out = tiny_pipeline_build
    report = json.loads((out / "report.json").read_text())
    first = report["images"]["rows"][0]
    result = rkconvert("generate", str(out), "--prompt", first["prompt"], "--prompt", "a green triangle",
                       "--seed", str(first["seed"]), "--out", str(tmp_path / "gen"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "grid.png" in result.stdout and result.stdout.count("PSNR") == 2
    assert not [text for text in THIRD_PARTY if text in result.stdout + result.stderr]
    for name in ("00-reference.png", "00-rknn.png", "00-difference.png", "01-rknn.png", "grid.png"):
        assert (tmp_path / "gen" / name).is_file(), name
    # Same prompt, seed and steps as the build's first evaluation image: the same picture, up to the float
    # rounding of a batch of 2 prompts against the build's batch of its evaluation prompts.
    built = _png(out / "images" / "evaluation" / first["rknn"])
    assert psnr(_png(tmp_path / "gen" / "00-rknn.png"), built) > 35
    assert psnr(_png(tmp_path / "gen" / "00-reference.png"),
                _png(out / "images" / "evaluation" / first["reference"])) > 35


def test_a_build_that_fails_after_its_pipeline_models_passed_places_none_of_them(tiny_pipeline_build, tmp_path):
    """The text encoder's and VAE decoder's .rknn are placed once the whole build has passed: a UNet that fails its
    last gate (or a build killed there) leaves their builds passed and reused, and no .rknn beside any report."""
    work, result, whole = tiny_pipeline_build
    assert result.returncode == 0, result.stderr
    out = tmp_path / "failed"
    shutil.copytree(whole, out)
    failed = rkconvert("build", "--target", "rk3588", "--model", str(work / "tiny-pipeline"), "--resolution", "64",
                       "--min-layer-cos", "0.99999999", "--out", str(out), cwd=tmp_path)
    assert failed.returncode == 1 and "under --min-layer-cos" in error_lines(failed)[0], failed.stderr
    assert json.loads((out / "report.json").read_text())["status"] == "failed"
    for name in ("text_encoder", "vae_decoder"):
        assert f"{name}: rknn rknn-toolkit2 float16 build for rk3588 + simulator (reused)" in failed.stderr
        assert json.loads((out / "npu" / name / "report.json").read_text())["status"] == "passed"
    assert sorted(p.relative_to(out) for p in out.rglob("*.rknn") if "stages" not in p.parts) == []
    # Without the gate, and with the failed run's layer report: its .rknn build is reused, not made again.
    again = rkconvert("build", "--target", "rk3588", "--model", str(work / "tiny-pipeline"), "--resolution", "64",
                      "--out", str(out), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "✓ rknn rknn-toolkit2 float16 build for rk3588 + simulator (reused)" in again.stderr, again.stderr
    placed = sorted(str(p.relative_to(out)) for p in out.rglob("*.rknn") if "stages" not in p.parts)
    assert placed == ["npu/text_encoder/text_encoder-rk3588.rknn", "npu/vae_decoder/vae_decoder-rk3588.rknn",
                      "tiny-pipeline-rk3588.rknn"]
    assert {json.loads((out / "npu" / name / "report.json").read_text())["status"]
            for name in ("text_encoder", "vae_decoder")} == {"ok"}


def test_a_part_left_on_the_cpu_is_drawn_there_by_the_check_the_bundle_and_the_runner(tiny_pipeline_build, tmp_path):
    """The text encoder and VAE decoder are each a build of their own beside the UNet (npu/<part>/); one that is
    not built for the NPU (--npu-models, as a part the toolkit fails) is drawn on the CPU by the image check, is
    shipped as ONNX only, and the board runner runs it in onnxruntime, the rest on the NPU."""
    work, result, whole = tiny_pipeline_build
    assert result.returncode == 0, result.stderr
    full = json.loads((whole / "report.json").read_text())
    assert full["images"]["on_npu"] == ["unet", "text_encoder", "vae_decoder"]
    for name, part in full["npu_models"].items():
        own = json.loads((whole / part["folder"] / "report.json").read_text())
        assert own["status"] == "ok" and own["graph"] == "graph" and own["dtype"] == "float16"
        assert part["output_psnr_db"] == own["output_psnr_db"] >= own["min_psnr"] == 40
        assert (whole / part["artifact"]).stat().st_size == part["artifact_bytes"]
        assert f"{name.replace('_', ' ')}  " in result.stdout
    out = tmp_path / "decoder-only"
    shutil.copytree(whole, out)
    built = rkconvert("build", "--target", "rk3588", "--model", str(work / "tiny-pipeline"), "--layer-report", "off",
                      "--npu-models", "vae_decoder", "--out", str(out), cwd=work)
    assert built.returncode == 0, built.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["npu_models"]["text_encoder"] == {"on": "cpu", "why": "--npu-models vae_decoder"}
    assert report["images"]["on_npu"] == ["unet", "vae_decoder"]
    assert "on the CPU (onnxruntime): --npu-models vae_decoder" in " ".join(built.stdout.split())
    # The text encoder in torch instead of float16 on the NPU: the same pictures, not the same bytes.
    for row, npu_row in zip(report["images"]["rows"], full["images"]["rows"]):
        drawn = _png(out / "images" / "evaluation" / row["rknn"])
        assert 30 < psnr(drawn, _png(whole / "images" / "evaluation" / npu_row["rknn"])) < float("inf")
    bundle = tmp_path / "tiny.tar.gz"
    assert rkconvert("release", str(out), "--out", str(bundle), cwd=tmp_path).returncode == 0
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
        names = tar.getnames()
    assert sorted(n for n in names if n.endswith((".rknn", ".onnx")) and "/host/" not in n) == [
        "tiny/cpu/text_encoder.onnx", "tiny/cpu/vae_decoder.onnx", "tiny/cpu/vae_encoder.onnx", "tiny/model.rknn",
        "tiny/npu/vae_decoder.rknn"]
    first = report["images"]["rows"][0]
    ran = subprocess.run([sys.executable, "board/run.py", "--simulate", str(out), "--prompt", first["prompt"],
                          "--seed", str(first["seed"]), "--steps", str(report["images"]["steps"]), "--out",
                          str(tmp_path / "run")], cwd=tmp_path / "unpacked" / "tiny", capture_output=True, text=True,
                         timeout=600)
    assert ran.returncode == 0, ran.stderr
    assert "(text encoder on the CPU, vae decoder on the NPU)" in ran.stdout
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    drawn = _png(tmp_path / "run" / timing["image"])
    # onnxruntime's float32 text encoder against torch's, numpy's sampler against diffusers': a level or two.
    assert np.abs(drawn.astype(int) - _png(out / "images" / "evaluation" / first["rknn"])).max() <= 2
    # --cpu-models: the decoder the bundle has as a .rknn in onnxruntime too, float32 against float16.
    ran = subprocess.run([sys.executable, "board/run.py", "--simulate", str(out), "--prompt", first["prompt"],
                          "--seed", str(first["seed"]), "--steps", str(report["images"]["steps"]), "--cpu-models",
                          "--out", str(tmp_path / "run-cpu")], cwd=tmp_path / "unpacked" / "tiny", capture_output=True,
                         text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    assert "(text encoder on the CPU, vae decoder on the CPU)" in ran.stdout
    on_cpu = _png(tmp_path / "run-cpu" / json.loads((tmp_path / "run-cpu" / "timing.json").read_text())["image"])
    assert 40 <= psnr(on_cpu, drawn) < float("inf")


def test_generate_and_the_image_gates_need_a_model_that_can_draw(tiny_build, tiny_artifact_build, tiny_pipeline_build,
                                                                tmp_path):
    work, _, _, _ = tiny_build
    _, unet_only = tiny_artifact_build  # a finished build of a UNet alone
    result = rkconvert("generate", str(unet_only), "--prompt", "a red circle", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "is a UNet alone" in line and "report.json" in line
    missing = rkconvert("generate", str(tmp_path / "nowhere"), "--prompt", "x", cwd=tmp_path)
    assert missing.returncode == 2 and "not an rkconvert build folder" in error_lines(missing)[0]
    forced = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--image-check", "on", cwd=work)
    assert forced.returncode == 2 and "tiny-unet is not a text-to-image pipeline" in error_lines(forced)[0]
    pipeline_work, _, _ = tiny_pipeline_build
    judged = rkconvert("build", "--target", "rk3588", "--model", "tiny-pipeline", "--layer-report", "off",
                       "--min-prompt-accuracy", "0.5", cwd=pipeline_work)
    assert judged.returncode == 2 and "brings no judge of its images" in error_lines(judged)[0]


def test_a_broken_evaluation_spec_is_refused_before_anything_is_built(tmp_path):
    save_tiny_pipeline(tmp_path / "pipe")
    (tmp_path / "pipe" / "rkconvert.json").write_text('{"evaluation": {"steps": 4}}')
    result = rkconvert("build", "--target", "rk3588", "--model", "pipe", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "pipe/rkconvert.json: not a readable evaluation spec" in line and "'prompts'" in line
    assert not (tmp_path / "build").exists()


def test_the_host_draws_with_the_folders_sampler_and_refuses_one_the_board_lacks(tmp_path):
    import shutil

    import pytest

    from converter.common.errors import UserError
    from converter.imaging.text_to_image import scheduler

    shutil.copytree(demo.PIPELINE / "scheduler", tmp_path / "scheduler")
    assert type(scheduler(tmp_path)).__name__ == "DDIMScheduler"
    assert type(scheduler(tmp_path, "euler-ancestral")).__name__ == "EulerAncestralDiscreteScheduler"
    config = tmp_path / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "DPMSolverMultistepScheduler"}))
    with pytest.raises(UserError) as refused:
        scheduler(tmp_path)
    assert str(refused.value).startswith(f"{config}: DPMSolverMultistepScheduler: this runner samples with DDIM")
    assert "\n" not in str(refused.value)
    assert type(scheduler(tmp_path, "lcm")).__name__ == "LCMScheduler"  # another on the same schedule


def _start_picture(size: int) -> Image.Image:
    """A red disc on a blue-to-green ramp: a picture with edges and gradients to redraw."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    image = np.stack([np.zeros_like(x), x, 1 - x], axis=-1)
    image[(x - 0.35) ** 2 + (y - 0.6) ** 2 < 0.05] = (1.0, 0.1, 0.1)
    return Image.fromarray((image * 255).round().astype(np.uint8))


def _diffusers_img2img(folder, image: Image.Image, strength: float) -> np.ndarray:
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        drawn = pipe("a blue square at the top", image=image, strength=strength, num_inference_steps=4,
                     guidance_scale=3.0, generator=torch.Generator().manual_seed(3), output_type="np").images[0]
    return np.clip(np.round(drawn * 255), 0, 255).astype(np.uint8)


def test_img2img_redraws_the_picture_as_diffusers_img2img_pipeline(tiny_pipeline_build, tmp_path):
    work, result, out = tiny_pipeline_build
    assert result.returncode == 0, result.stderr
    _start_picture(64).save(tmp_path / "start.png")
    drawing = ("--prompt", "a blue square at the top", "--seed", "3", "--steps", "4", "--guidance-scale", "3",
               "--init-image", str(tmp_path / "start.png"), "--strength", "0.6")
    # The board runner redraws it as generate does: its numpy sampler from the strength's step, the VAE encoder in
    # onnxruntime, the latents drawn from the seed's generator in diffusers' order.
    image_psnr, timing = runner_against_generate(out, drawing, tmp_path, work)
    assert image_psnr >= 40 and len(timing["unet_step_seconds"]) == int(4 * 0.6)
    assert timing["on"] == {"text_encoder": "npu", "vae_decoder": "npu", "vae_encoder": "cpu"}
    reference, rknn = _png(tmp_path / "gen" / "00-reference.png"), _png(tmp_path / "gen" / "00-rknn.png")
    # The reference (the UNet's rewritten graph in ONNX Runtime, float32) is diffusers' img2img drawing with the torch
    # UNet up to float32 sums in another order; the .rknn's (float16 UNet, text encoder and decoder) close to it.
    expected = _diffusers_img2img(work / "tiny-pipeline", _start_picture(64), 0.6)
    assert psnr(reference, expected) >= 35
    assert psnr(rknn, reference) >= 30
    # Shown to fail: another strength, or no starting picture, is another drawing.
    for other in (_diffusers_img2img(work / "tiny-pipeline", _start_picture(64), 0.9),
                  _png(out / "images" / "evaluation" / "00-reference.png")):
        assert psnr(reference, other) <= psnr(reference, expected) - 10
    _start_picture(48).save(tmp_path / "small.png")
    small = rkconvert("generate", str(out), "--prompt", "a cat", "--init-image", str(tmp_path / "small.png"),
                      "--out", str(tmp_path / "none"), cwd=work)
    assert small.returncode == 2 and error_lines(small) == [
        f"rkconvert: error: --init-image {tmp_path / 'small.png'}: 48x48 px; this build draws 64x64 (its UNet's "
        "shapes are fixed at build time)"]
    assert not (tmp_path / "none").exists()
    # The runner refuses them before any model runs: nothing is written.
    bundle = tmp_path / "bundle" / "bundle"  # runner_against_generate unpacked it
    (tmp_path / "not.png").write_text("no picture")
    for args, error in (((str(tmp_path / "small.png"), "0.6"), f"--init-image {tmp_path / 'small.png'}: 48x48 px; "
                         "this bundle draws 64x64"),
                        ((str(tmp_path / "start.png"), "0"), "--strength 0.0: from 0 (exclusive) to 1"),
                        ((str(tmp_path / "not.png"), "0.6"), f"--init-image {tmp_path / 'not.png'}: not a PNG")):
        refused = _runner(bundle, "--simulate", str(out), "--prompt", "a cat", "--init-image", args[0], "--strength",
                          args[1], "--out", str(tmp_path / "refused"))
        assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(f"run.py: error: {error}")
    assert not (tmp_path / "refused").exists()
