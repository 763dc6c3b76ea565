"""The board runner's torch-free parts agree with what `rkconvert generate` uses on the host:
transformers' CLIPTokenizer, diffusers' DDIMScheduler, torch.randn — and import none of them."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from converter.board import samplers as sampler
from converter.board.clip_tokenizer import ClipTokenizer
from converter.board.manifest import (SCHEMA, Accuracy, Check, FileEntry, ForSize, Manifest, ManifestError, Pipeline,
                                      Run, Tensor)
from converter.board.noise import TorchGenerator
from converter.models.demo import PIPELINE as DEMO_PIPELINE

BOARD = Path(__file__).resolve().parents[1] / "converter" / "board"
# What a board has: the standard library, numpy, onnxruntime and (lazily) rknn-toolkit-lite2.
BOARD_IMPORTS = {"numpy", "onnxruntime", "rknnlite"}
TEXTS = ["", "A  RED circle, on the LEFT!!", "a purple_zebra 42 on the right", "héllo wörld ²", "a " * 100,
         "<|startoftext|>a blue square<|endoftext|>"]


def _hf(tokenizer, text):
    return tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids


def test_the_tokenizer_gives_the_pipelines_ids(tmp_path):
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    from calib_data.text_encoder import tiny

    demo = CLIPTokenizer.from_pretrained(DEMO_PIPELINE / "tokenizer", local_files_only=True)
    ours = ClipTokenizer(DEMO_PIPELINE / "tokenizer" / "tokenizer.json")
    prompts = [line.split("\t")[-1] for line in (DEMO_PIPELINE / "prompts.tsv").read_text().splitlines()]
    for text in prompts + TEXTS:
        assert ours(text) == _hf(demo, text), text
    # A byte-level vocabulary (every printable character, no merges): unicode text goes through bytes.
    slow, _ = tiny(32, 0)
    slow.save_pretrained(tmp_path / "slow")
    CLIPTokenizerFast.from_pretrained(tmp_path / "slow").save_pretrained(tmp_path / "fast")
    fast = CLIPTokenizerFast.from_pretrained(tmp_path / "fast")
    chars = ClipTokenizer(tmp_path / "fast" / "tokenizer.json")
    for text in TEXTS:
        assert chars(text) == _hf(fast, text), text


def _diffusers_scheduler(class_name: str, config: dict):
    import diffusers

    return getattr(diffusers, class_name).from_config(config)


# (sampler class, config changes): the demo's DDIM config read as each, as `--scheduler` reads it; SD-Turbo's
# Euler-ancestral config (trailing spacing); an LCM's (leading, set_alpha_to_one false, as LCM-Dreamshaper's).
SAMPLERS = [("DDIMScheduler", {}), ("DDIMScheduler", {"timestep_spacing": "trailing"}),
            ("DDIMScheduler", {"timestep_spacing": "linspace"}),
            ("EulerDiscreteScheduler", {}), ("EulerDiscreteScheduler", {"timestep_spacing": "linspace"}),
            ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
            ("EulerAncestralDiscreteScheduler", {}), ("LCMScheduler", {"original_inference_steps": 50})]


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("class_name,changes", SAMPLERS)
def test_each_sampler_takes_diffusers_steps_with_the_same_noise(tmp_path, class_name, changes, prediction):
    """Step for step as StableDiffusionPipeline drives diffusers' scheduler: the starting latents times
    init_noise_sigma, the model input scaled, the ancestral noise from the same generator; the model's output
    read as noise or as v (SD 2.x at 768 px), as the config says."""
    config = {**json.loads((DEMO_PIPELINE / "scheduler" / "scheduler_config.json").read_text()), **changes,
              "prediction_type": prediction}
    (tmp_path / "scheduler_config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    for steps in (1, 2, 4, 20):
        theirs = _diffusers_scheduler(class_name, config)
        ours = sampler.from_config(tmp_path / "scheduler_config.json",
                                   {v: k for k, v in sampler.NAMES.items()}[class_name])
        theirs.set_timesteps(steps)
        ours.set(steps)
        assert np.allclose(ours.timesteps, theirs.timesteps.numpy()), (ours.timesteps, theirs.timesteps)
        generator, mine = torch.Generator().manual_seed(7), TorchGenerator(7)
        expected = torch.randn((1, 4, 16, 16), generator=generator) * theirs.init_noise_sigma
        x = mine.randn((1, 4, 16, 16)) * ours.init_noise_sigma
        worst = 0.0
        for i, t in enumerate(theirs.timesteps):
            model_input = theirs.scale_model_input(expected, t)
            worst = max(worst, float(np.abs(ours.scale(x, i) - model_input.numpy()).max()))
            eps = rng.standard_normal(x.shape).astype(np.float32)
            expected = theirs.step(torch.from_numpy(eps), t, expected, generator=generator).prev_sample
            x = ours.step(eps, i, x, mine)
            worst = max(worst, float(np.abs(x - expected.numpy()).max()))
        # float32 in another order: ~1e-6 relative a step (DDIM's 20 steps of latents ~1: under 1e-5)
        assert worst <= 1e-5 * max(1.0, float(np.abs(expected.numpy()).max())), (steps, worst)


@pytest.mark.parametrize("strength", [0.3, 0.6, 1.0])
@pytest.mark.parametrize("class_name,changes", SAMPLERS)
def test_each_sampler_redraws_a_picture_as_diffusers_img2img_does(tmp_path, class_name, changes, strength):
    """As StableDiffusionImg2ImgPipeline drives the scheduler: the steps int(steps x strength) from the noisier end
    (get_timesteps, set_begin_index), the picture's latents noised to the first of them, then the same steps."""
    config = json.loads((DEMO_PIPELINE / "scheduler" / "scheduler_config.json").read_text()) | changes
    (tmp_path / "scheduler_config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(1)
    x0, noise = (rng.standard_normal((1, 4, 16, 16)).astype(np.float32) for _ in range(2))
    theirs = _diffusers_scheduler(class_name, config)
    ours = sampler.from_config(tmp_path / "scheduler_config.json", {v: k for k, v in sampler.NAMES.items()}[class_name])
    theirs.set_timesteps(8)
    ours.set(8)
    skipped = sampler.img2img_skip(8, strength)
    timesteps = theirs.timesteps[skipped:]
    if hasattr(theirs, "set_begin_index"):
        theirs.set_begin_index(skipped)
    ours.begin(skipped)
    expected = theirs.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), timesteps[:1])
    x = ours.add_noise(x0, noise)
    assert len(ours.timesteps) == len(timesteps) == int(8 * strength)
    generator, mine = torch.Generator().manual_seed(7), TorchGenerator(7)
    worst = float(np.abs(x - expected.numpy()).max())
    for i, t in enumerate(timesteps):
        worst = max(worst, float(np.abs(ours.scale(x, i) - theirs.scale_model_input(expected, t).numpy()).max()))
        out = rng.standard_normal(x.shape).astype(np.float32)
        expected = theirs.step(torch.from_numpy(out), t, expected, generator=generator).prev_sample
        x = ours.step(out, i, x, mine)
        worst = max(worst, float(np.abs(x - expected.numpy()).max()))
    assert worst <= 1e-5 * max(1.0, float(np.abs(expected.numpy()).max())), worst


def test_a_sampler_it_does_not_implement_is_refused_naming_the_file(tmp_path):
    config = json.loads((DEMO_PIPELINE / "scheduler" / "scheduler_config.json").read_text())
    (tmp_path / "x0.json").write_text(json.dumps({**config, "prediction_type": "sample"}))
    with pytest.raises(ValueError, match="x0.json: DDIMScheduler {'prediction_type': 'sample'}"):
        sampler.from_config(tmp_path / "x0.json")
    (tmp_path / "dpm.json").write_text(json.dumps({**config, "_class_name": "DPMSolverMultistepScheduler"}))
    with pytest.raises(ValueError, match="dpm.json: DPMSolverMultistepScheduler: this runner samples with DDIM"):
        sampler.from_config(tmp_path / "dpm.json")


@pytest.mark.parametrize("seed", [0, 1000, 2**40 + 5])
def test_starting_noise_is_torchs(seed):
    for shape in ((1, 4, 16, 16), (1, 4, 64, 64)):
        expected = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).numpy()
        assert np.abs(TorchGenerator(seed).randn(shape) - expected).max() < 1e-6  # log/cos rounding: ~5e-7 seen
    with pytest.raises(ValueError, match="not a multiple of 16"):
        TorchGenerator(seed).randn((1, 3, 5, 5))
    # a generator's later draws continue its stream, as an ancestral sampler's noise does
    generator, ours = torch.Generator().manual_seed(seed), TorchGenerator(seed)
    for shape in ((1, 4, 16, 16), (2, 4, 8, 8), (1, 4, 16, 16)):
        assert np.abs(ours.randn(shape) - torch.randn(shape, generator=generator).numpy()).max() < 1e-6


def test_the_board_code_imports_nothing_a_board_lacks():
    import sys

    own = {p.stem for p in BOARD.glob("*.py")}  # the runner's modules, beside it on the board
    for path in BOARD.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names | BOARD_IMPORTS | own, f"{path.name} imports {name}"


def _manifest() -> Manifest:
    """A bundle of two sizes, its decoder on the NPU at each: every kind of entry the manifest has."""
    sample = Tensor("sample", [1, 4, 8, 8], "float16", "NCHW")
    decoder = Run("npu/vae_decoder.rknn", [sample], [Tensor("image", [1, 3, 64, 64], "float16", "NCHW")],
                  {"Conv": 3}, {"float16": 100}, accuracy=Accuracy(41.5, 0.9999), build="64px")
    one = ForSize(resolution=64, rknn="model.part1.rknn", inputs=[sample], outputs=[sample], op_counts={"Conv": 5},
                  constant_bytes={"float16": 64},
                  parts=[Run("model.part1.rknn", [sample], [sample], {"Conv": 2}, {"float16": 32}),
                         Run("model.part2.rknn", [sample], [sample], {"Conv": 3}, {"float16": 32})],
                  host_programs=["host/t.onnx"], accuracy=Accuracy(38.2, 0.998, 0.1, "gaussian", 30.0), images=None,
                  build_command="rkconvert build", check=Check("check", ["sample"], ["out_sample"]),
                  pipeline=Pipeline([1, 4, 8, 8], 0.18215, 20, 7.5, ["a red circle"], {"vae_decoder": decoder},
                                    {"vae_decoder": "cpu/vae_decoder.onnx"}, {"timestep_cond": "guidance"}),
                  build="64px")
    other = ForSize(**{**vars(one), "resolution": 128, "rknn": "128px/model.rknn", "parts": None, "build": "128px"})
    return Manifest(SCHEMA, "0.1.0", "rk3588", "2.5.0", "2.5.0 (x)", "2.5.0", "float16", "demo",
                    {"model.part1.rknn": FileEntry("ab" * 32, 10)}, one, {"64": one, "128": other})


def test_the_manifest_reads_back_what_it_writes_and_names_what_is_wrong():
    made = _manifest()
    assert Manifest.loads(made.dumps()) == made
    assert made.at(None) is made.first and made.at(128).rknn == "128px/model.rknn"
    assert [r.rknn for r in made.at(64).runs()] == ["model.part1.rknn", "model.part2.rknn"]
    assert [r.rknn for r in made.at(128).runs()] == ["128px/model.rknn"]
    assert [r.rknn for r in made.all_runs()] == ["model.part1.rknn", "model.part2.rknn", "npu/vae_decoder.rknn",
                                                 "128px/model.rknn"]
    with pytest.raises(ManifestError, match=r"^--size 256: this bundle draws at 64, 128 px$"):
        made.at(256)
    raw = made.to_json()
    bad = {
        "not JSON": (b"{", r"^manifest.json: not JSON"),
        "no target": (json.dumps({k: v for k, v in raw.items() if k != "target"}), r"^manifest.json: no 'target'$"),
        "schema": (json.dumps({**raw, "schema": "other/2"}), r"schema 'other/2', expected 'rkconvert-bundle/2'"),
        "files": (json.dumps({**raw, "files": {"x": {"sha256": 1}}}), r"files\['x'\] needs sha256 and bytes"),
        "a size's check": (json.dumps({**raw, "sizes": {"128": {**raw["sizes"]["128"], "check": {"folder": "c"}}}}),
                           r"^manifest.json: sizes: 128: check: no 'inputs'$"),
        "a part's steps": (json.dumps({**raw, "pipeline": {**raw["pipeline"], "steps": "20"}}),
                           r"^manifest.json: pipeline: 'steps' is str$"),
    }
    for name, (text, message) in bad.items():
        with pytest.raises(ManifestError, match=message):
            Manifest.loads(text)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_the_board_reads_the_pngs_pillow_writes(tmp_path, mode):
    """Pillow picks a filter per row (all five kinds on a picture with edges, gradients and noise)."""
    from converter.board.png import load_png

    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:40, 0:56]
    picture = np.stack([x * 4, y * 6, (x * y) % 256, rng.integers(0, 256, x.shape)], axis=-1).astype(np.uint8)
    picture[10:20, 30:40] = rng.integers(0, 256, (10, 10, 4))
    image = Image.fromarray(picture, "RGBA").convert(mode)
    image.save(tmp_path / "p.png", optimize=True)
    expected = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(load_png(tmp_path / "p.png"), expected)
    (tmp_path / "p.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    with pytest.raises(ValueError, match="p.jpg: not a PNG file"):
        load_png(tmp_path / "p.jpg")
