"""The demo's drawn world, its judge, and the script that trains a model on it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from converter.models.demo import scenes
from converter.models.demo.judge import judge
from tools import train_demo

WEIGHTS = ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
           "text_encoder/model.safetensors")


def test_the_judge_sees_the_generators_scenes_and_not_noise():
    rng = np.random.default_rng(7)
    truth = [scenes.random_scene(rng) for _ in range(400)]
    assert np.mean([judge(scenes.draw(s, rng), s.caption()).ok for s in truth]) >= 0.99
    noise = [judge(rng.integers(0, 256, (scenes.SIZE, scenes.SIZE, 3), dtype=np.uint8), s.caption()).ok
             for s in truth[:100]]
    chance = 1 / (len(scenes.COLOURS) * len(scenes.SHAPES))  # guessing one object's colour and shape
    assert np.mean(noise) <= chance
    flat = np.full((scenes.SIZE, scenes.SIZE, 3), scenes.BACKGROUNDS["gray"], np.uint8)
    assert not judge(flat, truth[0].caption()).ok


def test_the_judge_refuses_the_wrong_shape_colour_or_place():
    rng = np.random.default_rng(8)
    wrong = {"shape": 0, "colour": 0, "position": 0}
    for _ in range(60):
        scene = scenes.scene_of_layout("left", rng)
        image = scenes.draw(scene, rng)
        thing = scene.things[0]
        asks = {"shape": replace(thing, shape=next(s for s in scenes.SHAPES if s != thing.shape)),
                "colour": replace(thing, colour=next(c for c in scenes.COLOURS if c != thing.colour)),
                "position": replace(thing, position="right")}
        for what, asked in asks.items():
            verdict = judge(image, replace(scene, things=(asked,)).caption())
            wrong[what] += verdict.ok
    assert wrong == {"shape": 0, "colour": 0, "position": 0}


def test_captions_parse_back_into_their_scenes():
    rng = np.random.default_rng(9)
    for _ in range(200):
        scene = scenes.random_scene(rng)
        parsed = scenes.parse(scene.caption())
        assert parsed.things == scene.things
        assert parsed.background == (scene.background if scene.says_background else None)
    with pytest.raises(ValueError, match="not a demo scene caption"):
        scenes.parse("a photo of a cat")


def test_training_runs_and_is_deterministic_for_a_seed(tmp_path):
    steps = ["--vae-steps", "2", "--scenes", "64", "--unet-steps", "2", "--save-every", "1", "--threads", "1"]
    for run in ("a", "b"):
        train_demo.main(["--work", str(tmp_path / run / "work"), "--out", str(tmp_path / run / "out"), *steps])
    for phase in ("vae", "unet"):
        a = (tmp_path / "a" / "out" / f"train-{phase}-loss.jsonl").read_text().splitlines()
        b = (tmp_path / "b" / "out" / f"train-{phase}-loss.jsonl").read_text().splitlines()
        assert [json.loads(x)["loss"] for x in a] == [json.loads(x)["loss"] for x in b]
    for rel in WEIGHTS:
        assert (tmp_path / "a" / "out" / rel).read_bytes() == (tmp_path / "b" / "out" / rel).read_bytes(), rel
    # Resuming from a checkpoint gives what one uninterrupted run gives.
    train_demo.main(["--work", str(tmp_path / "c" / "work"), "--out", str(tmp_path / "c" / "out"),
                     *steps[:-4], "--unet-steps", "1", "--save-every", "1", "--threads", "1"])
    train_demo.main(["--work", str(tmp_path / "c" / "work"), "--out", str(tmp_path / "c" / "out"), *steps])
    for rel in WEIGHTS:
        assert (tmp_path / "a" / "out" / rel).read_bytes() == (tmp_path / "c" / "out" / rel).read_bytes(), rel
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "a" / "out" / "tokenizer", local_files_only=True)
    for word in scenes.vocabulary():
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    spec = json.loads((tmp_path / "a" / "out" / "rkconvert.json").read_text())
    assert {p["category"] for p in spec["evaluation"]["prompts"]} == set(scenes.LAYOUTS)
    for p in spec["evaluation"]["prompts"]:
        scenes.parse(p["prompt"])
