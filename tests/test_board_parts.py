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
from converter.release.board.ddim import Ddim
from converter.release.board.noise import torch_randn

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


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_takes_diffusers_steps(tmp_path, spacing):
    from diffusers import DDIMScheduler

    config = json.loads((DEMO_PIPELINE / "scheduler" / "scheduler_config.json").read_text())
    config["timestep_spacing"] = spacing
    (tmp_path / "scheduler_config.json").write_text(json.dumps(config))
    theirs, ours = DDIMScheduler.from_config(config), Ddim(tmp_path / "scheduler_config.json")
    rng = np.random.default_rng(0)
    for steps in (1, 4, 20, 50):
        theirs.set_timesteps(steps)
        assert ours.timesteps(steps).tolist() == theirs.timesteps.tolist()
        x = rng.standard_normal((1, 4, 16, 16)).astype(np.float32)
        expected = torch.from_numpy(x)
        for t in ours.timesteps(steps):
            eps = rng.standard_normal(x.shape).astype(np.float32)
            expected = theirs.step(torch.from_numpy(eps), int(t), expected).prev_sample
            x = ours.step(eps, int(t), x, steps)
        # float32 arithmetic in another order: rounding grows with the steps, ~6e-5 after 50.
        assert np.abs(x - expected.numpy()).max() < 2e-4, (steps, np.abs(x - expected.numpy()).max())


def test_ddim_refuses_what_it_does_not_sample(tmp_path):
    config = json.loads((DEMO_PIPELINE / "scheduler" / "scheduler_config.json").read_text())
    (tmp_path / "v.json").write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    with pytest.raises(ValueError, match="'prediction_type': 'v_prediction'"):
        Ddim(tmp_path / "v.json")


@pytest.mark.parametrize("seed", [0, 1000, 2**40 + 5])
def test_starting_noise_is_torchs(seed):
    for shape in ((1, 4, 16, 16), (1, 4, 64, 64)):
        expected = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).numpy()
        assert np.abs(torch_randn(shape, seed) - expected).max() < 1e-6  # log/cos rounding: ~5e-7 seen
    with pytest.raises(ValueError, match="not a multiple of 16"):
        torch_randn((1, 3, 5, 5), seed)


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
