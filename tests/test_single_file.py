"""Single-file checkpoints in the original (LDM) layout, SD 1.x and SD 2.x forms, read as the pipelines they hold."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

from calib_data.schedules import prediction_of
from converter.common.errors import UserError
from converter.imaging.evaluation import GENERIC
from converter.models import clip_vocabulary, tracing
from converter.models.model_source import resolve
from tests.conftest import as_numpy, error_lines, rkconvert, torch_output, unet_inputs
from tests.test_generate import THIRD_PARTY
from tests.test_release import runner_against_generate
from tools import make_single_file
from tools.make_pruned_unet import prune_unet


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RKCONVERT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _loaded(source):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    return (source.load_unet(), AutoencoderKL.from_pretrained(source.path / "vae").eval(),
            CLIPTextModel.from_pretrained(source.path / "text_encoder").eval())


def _assert_same_weights(loaded: torch.nn.Module, original: torch.nn.Module, half: bool = False):
    mine, theirs = loaded.state_dict(), original.state_dict()
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        expected = value.half().float() if half else value
        assert torch.equal(mine[key], expected), key


def _built(tmp_path, name: str, *extra: str) -> tuple[Path, dict]:
    # The text encoder and decoder stay on the CPU here: what a single file changes is the folder they come from.
    result = rkconvert("build", "--target", "rk3588", "--model", f"{name}.safetensors", "--resolution", "64",
                       "--layer-report", "off", "--npu-models", "none", *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not [line for line in (result.stdout + result.stderr).splitlines() if any(t in line for t in THIRD_PARTY)]
    out = tmp_path / "build" / f"{name}-rk3588"
    report = json.loads((out / "report.json").read_text())
    assert report["output_psnr_db"] >= 50
    return out, report


def _assert_onnx_as_the_folders(out: Path, unet, tmp_path: Path) -> None:
    """The build's traced UNet equals, output for output, the one traced from a diffusers folder of the same
    weights."""
    folder = tmp_path / "as-folder"
    unet.save_pretrained(folder)
    tracing.trace(resolve(str(folder)).load_unet(), 64, tmp_path / "folder.onnx")
    feed = as_numpy(unet_inputs(unet))
    ours, theirs = (ort.InferenceSession(str(p)) for p in (out / "stages" / "export" / "model.onnx",
                                                            tmp_path / "folder.onnx"))
    np.testing.assert_array_equal(ours.run(None, feed)[0], theirs.run(None, feed)[0])


def test_sd1_single_file_builds_as_the_diffusers_weights_it_holds(tmp_path, cache):
    unet, vae, text = make_single_file.write(tmp_path / "tiny-sd1.safetensors", "sd1")
    out, report = _built(tmp_path, "tiny-sd1", "--image-check", "on")
    _assert_onnx_as_the_folders(out, unet, tmp_path)
    # No evaluation set in a single file: --image-check on draws the generic prompts through the .rknn.
    assert [row["prompt"] for row in report["images"]["rows"]] == [p.prompt for p in GENERIC.prompts]
    assert report["images"]["summary"]["psnr_db_mean"] >= 30

    source = resolve(str(tmp_path / "tiny-sd1.safetensors"))
    assert source.kind == "pipeline" and source.name == "tiny-sd1" and source.path.parent.parent == cache
    for mine, original in zip(_loaded(source), (unet, vae, text)):
        _assert_same_weights(mine, original)

    # The file draws as a pipeline folder does: generate, and the board runner of its release bundle (the
    # tokenizer.json written from CLIP's vocabulary, the scheduler, the traced text encoder and decoder).
    drawing = ("--prompt", "a red circle on the left", "--seed", "3", "--steps", "2")
    assert runner_against_generate(out, drawing, tmp_path, tmp_path)[0] >= 40


def test_sd2_single_file_in_half_precision_loads_exactly_and_builds(tmp_path, capsys):
    unet, vae, text = make_single_file.write(tmp_path / "sd2.safetensors", "sd2", half=True)
    out, _ = _built(tmp_path, "sd2")
    _assert_onnx_as_the_folders(out, unet.half().float(), tmp_path)  # the file's float16 weights
    source = resolve(str(tmp_path / "sd2.safetensors"))
    # An SD 2.x file cannot say whether it predicts v (768 px) or the noise (base): read as noise, and said so.
    assert "SD 2.x, read as predicting the noise" in capsys.readouterr().err
    assert prediction_of(source.path) == "epsilon"
    told = resolve(str(tmp_path / "sd2.safetensors"), prediction_type="v_prediction")
    assert prediction_of(told.path) == "v_prediction" and "read as predicting" not in capsys.readouterr().err
    assert (told.path / "unet" / "diffusion_pytorch_model.safetensors").samefile(
        source.path / "unet" / "diffusion_pytorch_model.safetensors")  # the weights linked, not copied
    loaded = _loaded(source)
    for mine, original in zip(loaded, (unet, vae, text)):
        _assert_same_weights(mine, original, half=True)
    assert loaded[0].config.use_linear_projection and loaded[2].config.num_hidden_layers == 2  # the penultimate
    assert loaded[2].config.hidden_act == "gelu"
    from transformers import CLIPTokenizer

    ids = CLIPTokenizer.from_pretrained(source.path / "tokenizer")("a cat", padding="max_length").input_ids
    assert len(ids) == 77 and ids[:4] == [49406, 320, 2368, 49407] and set(ids[4:]) == {0}  # OpenCLIP pads with 0
    assert resolve(str(tmp_path / "sd2.safetensors")).path == source.path  # written once, then reused


def test_a_file_with_ema_weights_builds_them_unless_told_and_says_which(tmp_path, capsys):
    ema_unet = make_single_file.tiny_parts("sd1", seed=1)[0]
    unet, _, _ = make_single_file.write(tmp_path / "ema.safetensors", "sd1", ema_unet=ema_unet)
    for ema, expected, said in ((True, ema_unet, "its UNet has the EMA ones"), (False, unet, "the trained ones")):
        source = resolve(str(tmp_path / "ema.safetensors"), ema=ema)
        assert said in capsys.readouterr().err
        _assert_same_weights(_loaded(source)[0], expected)
    assert not torch.equal(ema_unet.conv_in.weight, unet.conv_in.weight)


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_diffusers_own_single_file_loader_reads_the_test_files_as_written(tmp_path, family):
    """The LDM writer here and diffusers' from_single_file agree (given rkconvert's folder as its local config):
    the files are what a user's single file is."""
    from diffusers import StableDiffusionPipeline

    parts = make_single_file.write(tmp_path / "m.safetensors", family)
    folder = resolve(str(tmp_path / "m.safetensors")).path
    pipe = StableDiffusionPipeline.from_single_file(str(tmp_path / "m.safetensors"), config=str(folder),
                                                    local_files_only=True, safety_checker=None)
    for loaded, original in zip((pipe.unet, pipe.vae, pipe.text_encoder), parts):
        _assert_same_weights(loaded, original)


def test_a_pruned_single_file_loads_with_its_widths(tmp_path):
    parts = make_single_file.tiny_parts("sd1", block_out_channels=[64, 128])
    pruned = prune_unet(parts[0], ratio=0.5, resolution=64)
    make_single_file.write(tmp_path / "pruned.safetensors", "sd1", parts=(pruned, *parts[1:]))
    unet = resolve(str(tmp_path / "pruned.safetensors")).load_unet()
    _assert_same_weights(unet, pruned)
    inputs = unet_inputs(pruned)
    np.testing.assert_allclose(torch_output(unet, inputs), torch_output(pruned, inputs), rtol=0, atol=1e-6)


PROMPTS = ["a photograph of an astronaut riding a horse", "A RED Circle, on the LEFT!!", "3 cats & 12 dogs; 4.5 m",
           "don't stop—café über naïve", "  spaced   out\ttabs ", "emoji 🙂 and 漢字", "x" * 300]


def test_the_tokenizer_is_clips(tmp_path):
    """The written tokenizer gives OpenAI CLIP's ids (open_clip's own SimpleTokenizer, from the same wheel), in
    transformers and in the board runner's reader of tokenizer.json."""
    from transformers import CLIPTokenizer

    from converter.board.clip_tokenizer import ClipTokenizer

    spec = importlib.util.spec_from_file_location(
        "open_clip_tokenizer", clip_vocabulary.vocabulary_path().parent / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference = module.SimpleTokenizer()
    clip_vocabulary.save_tokenizer(tmp_path, pad_token=clip_vocabulary.EOS)
    transformers_tok, board_tok = CLIPTokenizer.from_pretrained(tmp_path), ClipTokenizer(tmp_path / "tokenizer.json")
    for prompt in PROMPTS:
        expected = reference([prompt])[0].tolist()  # padded with 0, cut to 76 + the end marker
        end = expected.index(49407) + 1
        expected = expected[:end] + [49407] * (77 - end)
        got = transformers_tok(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        assert got == expected, prompt
        assert board_tok(prompt) == expected, prompt


def _refused(tmp_path, tensors: dict, expect: str, *extra: str, name: str = "model.safetensors"):
    save_file(tensors, tmp_path / name)
    result = rkconvert("build", "--target", "rk3588", "--model", name, *extra, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == error_lines(result), result.stderr
    assert f"{name}: {expect}" in error_lines(result)[0]
    assert not (tmp_path / "build").exists() and not (tmp_path / "cache").exists()


def test_layouts_it_does_not_read_are_named(tmp_path):
    t = torch.zeros
    _refused(tmp_path, {"conditioner.embedders.1.model.ln_final.weight": t(2),
                        "model.diffusion_model.out.2.weight": t(2)}, "an SDXL checkpoint")
    _refused(tmp_path, {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": t(2)},
             "LoRA weights only (lora_down/lora_up), not a whole model: give it to --lora beside the model")
    _refused(tmp_path, {"encoder.down.0.block.0.conv1.weight": t(2), "decoder.up.0.block.0.conv1.weight": t(2)},
             "a VAE only")
    unet_only = {f"model.diffusion_model.{k}": v for k, v in make_single_file.unet_to_ldm(
        make_single_file.tiny_parts("sd1")[0]).items()}
    _refused(tmp_path, unet_only, "a UNet without the VAE")


def test_a_single_file_takes_no_config_and_a_ckpt_needs_trust_only_for_objects(tmp_path):
    make_single_file.write(tmp_path / "sd1.safetensors", "sd1")
    (tmp_path / "config.json").write_text("{}")
    result = rkconvert("build", "--target", "rk3588", "--model", "sd1.safetensors", "--config", "config.json",
                       cwd=tmp_path)
    assert result.returncode == 2 and "sd1.safetensors is a single-file checkpoint" in error_lines(result)[0]
    # Tensors and plain values (a Lightning checkpoint's global_step) are read without running code: this one
    # is then found to hold no UNet. A pickled object needs --trust-pickle.
    state = {"model.diffusion_model.out.2.weight": torch.zeros(1)}
    torch.save({"state_dict": state, "global_step": 1}, tmp_path / "sd1.ckpt")
    with pytest.raises(UserError, match="sd1.ckpt: no UNet under model.diffusion_model|a UNet without"):
        resolve(str(tmp_path / "sd1.ckpt"))
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=1e-4)}, tmp_path / "objects.ckpt")
    result = rkconvert("build", "--target", "rk3588", "--model", "objects.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "objects.ckpt: holds pickled Python objects" in error_lines(result)[0]
    assert "--trust-pickle" in error_lines(result)[0]
    assert not (tmp_path / "build").exists() and not (tmp_path / "cache").exists()
    with pytest.raises(UserError, match="objects.ckpt: no UNet under model.diffusion_model|a UNet without"):
        resolve(str(tmp_path / "objects.ckpt"), trust_pickle=True)
