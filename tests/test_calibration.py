"""Calibration sets recorded along the sampler's trajectories: the sampler's own tensors, deterministic,
and accepted by the toolkit's quantized build."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from calib_data import text_encoder
from calib_data.prompts import load_prompts
from calib_data.recorder import Pick, choose, pipeline, record, timesteps_of
from calib_data.schedules import SCHEDULES, get_schedule
from converter.common import onnx_runtime
from converter.common.errors import UserError
from converter.models.family import Signature
from converter.models.model_source import resolve
from tests.conftest import error_lines, rkconvert

CALIB = ("--samples", "6", "--trajectories", "2")
# The recorder's UNet and this test's are loaded by two processes: float32 kernels may round a few ULPs
# apart (tests/conftest.py, SAME_WEIGHTS_*), and the sampler carries that along its steps (2.9e-5 seen on
# latents up to 26, with both cores busy): compared within this fraction of the tensor's largest value.
# Another step, branch or prompt differs by whole units.
TRAJECTORY_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def recorded(tiny_build, tmp_path_factory):
    work, _, _, _ = tiny_build
    out = tmp_path_factory.mktemp("calib") / "out"
    result = rkconvert("calib", "--target", "rk3588", "--model", "tiny-unet", *CALIB, "--out", str(out), cwd=work)
    assert result.returncode == 0, result.stderr
    return work, out / "stages" / "calib", result


def test_recorded_inputs_are_the_samplers_own_unet_calls(recorded):
    work, calib, result = recorded
    stats = json.loads((calib / "calib.json").read_text())
    assert stats["count"] == 6 and len({s["prompt"] for s in stats["samples"]}) == 2
    assert "samples, sd15-20step" in result.stdout
    schedule = get_schedule("sd15-20step")
    unet = resolve(str(work / "tiny-unet")).load_unet()
    pipe = pipeline(unet, *text_encoder.tiny(unet.config.cross_attention_dim, 0), schedule)
    host = onnx_runtime.session(calib.parent / "passes" / "host" / "host_time_projection.onnx")
    for prompt in {s["prompt"] for s in stats["samples"]}:
        calls = []
        handle = unet.register_forward_pre_hook(
            lambda m, args, kwargs: calls.append((args[0].clone(), float(args[1]), kwargs["encoder_hidden_states"].clone())),
            with_kwargs=True)
        ours = [s for s in stats["samples"] if s["prompt"] == prompt]
        with torch.no_grad():
            pipe(prompt, height=64, width=64, num_inference_steps=20, guidance_scale=7.5, output_type="latent",
                 generator=torch.Generator().manual_seed(ours[0]["generator_seed"]))
        handle.remove()
        assert len(calls) == 20
        for sample in ours:
            latents, t, states = calls[sample["step"]]
            row = ("uncond", "cond").index(sample["branch"])
            files = dict(zip(stats["inputs"], sample["files"]))
            for name, ours_value in (("sample", latents[row:row + 1]), ("encoder_hidden_states", states[row:row + 1])):
                expected = ours_value.numpy()
                np.testing.assert_allclose(np.load(calib / files[name]), expected, rtol=0,
                                           atol=TRAJECTORY_TOLERANCE * np.abs(expected).max())
            assert sample["timestep"] == t
            t_emb = onnx_runtime.run(host, {"timestep": np.array([t], np.float32)})["t_emb"]
            np.testing.assert_array_equal(np.load(calib / files["t_emb"]), t_emb)


def test_same_seed_same_files_other_seed_other_files(recorded, tmp_path):
    work, calib, _ = recorded
    again = tmp_path / "again"
    other = tmp_path / "other"
    for out, seed in ((again, "0"), (other, "1")):
        result = rkconvert("calib", "--target", "rk3588", "--model", "tiny-unet", *CALIB, "--seed", seed,
                           "--out", str(out), cwd=work)
        assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in calib.glob("*.npy"))
    assert len(files) == 18 and files == sorted(p.name for p in (again / "stages" / "calib").glob("*.npy"))
    for name in files + ["dataset.txt", "calib.json"]:
        assert (calib / name).read_bytes() == (again / "stages" / "calib" / name).read_bytes(), name
    assert (calib / files[0]).read_bytes() != (other / "stages" / "calib" / files[0]).read_bytes()


def test_w8a8_build_calibrates_on_the_recorded_set(recorded):
    work, _, _ = recorded
    result = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--dtype", "w8a8", *CALIB,
                       "--check-samples", "2", "--min-psnr", "25", "--layer-report", "off", "--out", "q", cwd=work)
    assert result.returncode == 0, result.stderr
    report = json.loads((work / "q" / "report.json").read_text())
    assert report["dtype"] == "w8a8" and report["check_inputs"] == "trajectories"
    assert report["calibration"]["count"] == 6 and report["output_psnr_db"] >= 25
    checks = json.loads((work / "q" / "stages" / "checkset" / "calib.json").read_text())["samples"]
    calib = json.loads((work / "q" / "stages" / "calib" / "calib.json").read_text())["samples"]
    assert not {(s["generator_seed"], s["step"], s["branch"]) for s in checks} & \
        {(s["generator_seed"], s["step"], s["branch"]) for s in calib}, "check inputs must be held out"
    refused = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--dtype", "w4a16", cwd=work)
    assert refused.returncode == 2
    assert error_lines(refused) == ["rkconvert: error: --dtype w4a16 for rk3588: rknn-toolkit2 2.5.0 offers w4a16 "
                                    "for rk3576 and rv1126b only; rk3588 builds float16, w8a8"]


def test_an_onnx_unet_calibrates_through_onnx_runtime(recorded, tiny_build):
    """Exporters and model zoos hand out ONNX: the sampler runs it in ONNX Runtime and records the same
    inputs torch would (within float32 rounding along 20 DDIM steps), and it builds as w8a8."""
    work, calib, _ = recorded
    onnx_path = tiny_build[2] / "stages" / "export" / "model.onnx"
    result = rkconvert("build", "--target", "rk3588", "--model", str(onnx_path), "--dtype", "w8a8", *CALIB,
                       "--check-samples", "2", "--min-psnr", "25", "--layer-report", "off", "--out", "from-onnx",
                       cwd=work)
    assert result.returncode == 0, result.stderr
    report = json.loads((work / "from-onnx" / "report.json").read_text())
    assert report["calibration"]["count"] == 6 and report["output_psnr_db"] >= 25
    ours = work / "from-onnx" / "stages" / "calib"
    stats = json.loads((ours / "calib.json").read_text())
    assert stats["unet"] == "ONNX Runtime"
    torch_stats = json.loads((calib / "calib.json").read_text())
    assert [s["files"] for s in stats["samples"]] == [s["files"] for s in torch_stats["samples"]]
    for sample in stats["samples"]:
        for name in sample["files"]:
            np.testing.assert_allclose(np.load(ours / name), np.load(calib / name), rtol=1e-4, atol=1e-4)


def test_picks_are_deterministic_and_follow_the_requested_spread():
    prompts = load_prompts()
    schedule = SCHEDULES["sd15-20step"]
    timesteps = timesteps_of(schedule)
    a = choose(prompts, schedule, timesteps, 40, 5, "schedule", seed=3)
    assert a == choose(prompts, schedule, timesteps, 40, 5, "schedule", seed=3)
    assert a != choose(prompts, schedule, timesteps, 40, 5, "schedule", seed=4)
    assert len(a) == 40 and len({p.prompt for p in a}) == 5 and len(set(a)) == 40
    assert {p.branch for p in a} == {"uncond", "cond"}
    turbo = SCHEDULES["turbo-4step"]
    picks = choose(prompts, turbo, timesteps_of(turbo), 8, 2, "uniform", seed=0)
    assert {p.branch for p in picks} == {"cond"} and {p.step for p in picks} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="more than 2 trajectories"):
        choose(prompts, turbo, timesteps_of(turbo), 9, 2, "uniform", seed=0)


def test_prompt_sets(tmp_path):
    builtin = load_prompts()
    assert len(builtin) >= 50 and len({p.category for p in builtin}) == 10
    (tmp_path / "p.txt").write_text("# mine\n\nart\ta red circle\na blue square\n")
    assert [(p.category, p.text) for p in load_prompts(tmp_path / "p.txt")] == [("art", "a red circle"),
                                                                                ("user", "a blue square")]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UserError, match="no prompts in it"):
        load_prompts(tmp_path / "empty.txt")


def test_a_trajectory_stops_after_its_last_picked_step(tiny_build):
    """Nothing after the last pick changes what is recorded: the sampler stops there (the first 4 of
    20 steps run for picks at steps 1 and 3)."""
    unet = resolve(str(tiny_build[0] / "tiny-unet")).load_unet()
    schedule = get_schedule("sd15-20step")
    pipe = pipeline(unet, *text_encoder.tiny(unet.config.cross_attention_dim, 0), schedule)
    ran, got = [], []
    unet.register_forward_hook(lambda *_: ran.append(1))
    record(pipe, schedule, load_prompts(None)[:1], [Pick(0, 1, "cond"), Pick(0, 3, "uncond")], 64, 0,
           Signature.of_config(unet.config, 64).rows, got.append)
    assert [(c.pick.step, c.pick.branch) for c in got] == [(1, "cond"), (3, "uncond")] and len(ran) == 4
