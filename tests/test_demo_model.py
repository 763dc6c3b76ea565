"""The trained demo: its drawn world, its judge, its shipped weights, and the script that trained it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from safetensors.numpy import load_file

from converter.common.digest import file_sha256
from converter.common.errors import UserError
from converter.models import demo
from converter.models.demo import scenes
from converter.models.demo.judge import judge
from converter.models.model_source import resolve
from tests.conftest import rkconvert
from tools import train_demo


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


def test_shipped_weights_are_the_trained_ones(tmp_path):
    files = sorted(p.relative_to(demo.PIPELINE).as_posix() for p in demo.PIPELINE.rglob("*.safetensors"))
    assert files == sorted(demo.WEIGHTS_SHA256) and len(files) == 3  # unet, vae, text encoder
    for rel, expected in demo.WEIGHTS_SHA256.items():
        assert file_sha256(demo.PIPELINE / rel) == expected, rel
    assert sum((demo.PIPELINE / rel).stat().st_size for rel in files) <= 25 * 2**20
    unet = load_file(demo.PIPELINE / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(np.isfinite(v).all() for v in unet.values())
    assert resolve("demo").pipeline == demo.PIPELINE


def test_a_changed_weights_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "pipeline"
    copy.mkdir()
    rel = next(iter(demo.WEIGHTS_SHA256))
    (copy / rel).parent.mkdir(parents=True)
    (copy / rel).write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    monkeypatch.setattr(demo, "PIPELINE", copy)
    with pytest.raises(UserError, match="not the trained demo weights"):
        demo.pipeline_folder()


def test_every_caption_word_is_one_token_of_the_shipped_tokenizer():
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(demo.PIPELINE / "tokenizer", local_files_only=True)
    for word in scenes.vocabulary():
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word


def test_the_evaluation_set_covers_every_layout_and_the_judge_passes_its_ground_truth():
    spec = json.loads((demo.PIPELINE / "rkconvert.json").read_text())
    prompts = spec["evaluation"]["prompts"]
    assert {p["category"] for p in prompts} == set(scenes.LAYOUTS)
    assert len({p["seed"] for p in prompts}) == len(prompts)
    for p in prompts:
        scenes.parse(p["prompt"])


def test_quantizing_the_demo_keeps_a_pipeline_that_can_draw(tmp_path):
    result = rkconvert("quantize", "--model", "demo", "--out", str(tmp_path / "demo-w8a16"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    source = resolve(str(tmp_path / "demo-w8a16"))
    assert source.kind == "pipeline"
    for part in ("model_index.json", "rkconvert.json", "tokenizer", "text_encoder", "vae", "scheduler",
                 "unet/unet-w8a16.onnx"):
        assert (tmp_path / "demo-w8a16" / part).exists(), part
    unet = source.load_unet()
    assert unet.rkconvert_w8a16_layers == json.loads((tmp_path / "demo-w8a16" / "quantize.json").read_text())["layers"]


def test_training_runs_and_is_deterministic_for_a_seed(tmp_path):
    steps = ["--vae-steps", "2", "--scenes", "64", "--unet-steps", "2", "--save-every", "1", "--threads", "1"]
    for run in ("a", "b"):
        train_demo.main(["--work", str(tmp_path / run / "work"), "--out", str(tmp_path / run / "out"), *steps])
    for phase in ("vae", "unet"):
        a = (tmp_path / "a" / "out" / f"train-{phase}-loss.jsonl").read_text().splitlines()
        b = (tmp_path / "b" / "out" / f"train-{phase}-loss.jsonl").read_text().splitlines()
        assert [json.loads(x)["loss"] for x in a] == [json.loads(x)["loss"] for x in b]
    for rel in demo.WEIGHTS_SHA256:
        assert file_sha256(tmp_path / "a" / "out" / rel) == file_sha256(tmp_path / "b" / "out" / rel), rel
    # Resuming from a checkpoint gives what one uninterrupted run gives.
    train_demo.main(["--work", str(tmp_path / "c" / "work"), "--out", str(tmp_path / "c" / "out"),
                     *steps[:-4], "--unet-steps", "1", "--save-every", "1", "--threads", "1"])
    train_demo.main(["--work", str(tmp_path / "c" / "work"), "--out", str(tmp_path / "c" / "out"), *steps])
    for rel in demo.WEIGHTS_SHA256:
        assert file_sha256(tmp_path / "a" / "out" / rel) == file_sha256(tmp_path / "c" / "out" / rel), rel
