"""The board runner's torch-free parts agree with what `rkconvert generate` uses on the host:
transformers' CLIPTokenizer, diffusers' DDIMScheduler, torch.randn — and import none of them."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from converter.models.demo import PIPELINE as DEMO_PIPELINE
from converter.release.board.clip_tokenizer import ClipTokenizer
from converter.release.board import samplers as sampler
from converter.release.board.noise import TorchGenerator

BOARD = Path(__file__).resolve().parents[1] / "converter" / "release" / "board"
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


@pytest.mark.parametrize("class_name,changes", SAMPLERS)
def test_each_sampler_takes_diffusers_steps_with_the_same_noise(tmp_path, class_name, changes):
    """Step for step as StableDiffusionPipeline drives diffusers' scheduler: the starting latents times
    init_noise_sigma, the model input scaled, the ancestral noise from the same generator."""
    config = {**json.loads((DEMO_PIPELINE / "scheduler" / "scheduler_config.json").read_text()), **changes}
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


def test_a_sampler_it_does_not_implement_is_refused_naming_the_file(tmp_path):
    config = json.loads((DEMO_PIPELINE / "scheduler" / "scheduler_config.json").read_text())
    (tmp_path / "v.json").write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    with pytest.raises(ValueError, match="v.json: DDIMScheduler {'prediction_type': 'v_prediction'}"):
        sampler.from_config(tmp_path / "v.json")
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
                if name.startswith("converter.") and path.name == "run.py":
                    continue  # --simulate only, on the host that has rkconvert
                assert top in sys.stdlib_module_names | BOARD_IMPORTS | own, f"{path.name} imports {name}"
