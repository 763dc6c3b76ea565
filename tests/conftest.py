"""Shared fixtures: tiny UNets of the real diffusers class, and a way to run the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
import torch
from diffusers import UNet2DConditionModel

from cli_runner import run_cli

# SD 1.5's block types and heads at two stages and 32/64 channels: the same operators, built in seconds.
TINY_CONFIG = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}
TINY_RESOLUTION = 64

# Modules longest first (their time in a `make test` on this 2-core machine, 30-300 s each): `make test` hands
# whole modules to its two workers (--dist loadfile) in collection order (--no-loadscope-reorder: xdist would
# order them by test count), and a long module handed out last ran alone for 100-150 s while the other worker
# idled. Every module of 30 s or more is ranked (measured with --junitxml); the rest follow alphabetically.
LONGEST_FIRST = ["test_matrix", "test_layer_report", "test_hybrid", "test_generate", "test_presets_convert",
                 "test_parts_build", "test_diagnose", "test_single_file", "test_lowering", "test_sizes",
                 "test_vae_swap", "test_release", "test_lcm", "test_calibration", "test_cli_build", "test_any_graph",
                 "test_w8a16", "test_diagnose_unseen", "test_host_time_projection", "test_tile_attention",
                 "test_demo_model", "test_v_prediction"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


def tiny_unet(seed: int = 0, **overrides) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**{**TINY_CONFIG, **overrides}).eval()


def unet_inputs(unet: UNet2DConditionModel, resolution: int = TINY_RESOLUTION, seed: int = 1, timestep: float = 321.0):
    g = torch.Generator().manual_seed(seed)
    latent = resolution // 8
    return {
        "sample": torch.randn(1, unet.conv_in.in_channels, latent, latent, generator=g),
        "timestep": torch.tensor([timestep]),
        "encoder_hidden_states": torch.randn(1, 77, unet.config.cross_attention_dim, generator=g),
    }


def torch_output(unet: UNet2DConditionModel, inputs: dict) -> np.ndarray:
    with torch.no_grad():
        return unet(**inputs, return_dict=False)[0].numpy()


# Float32 kernels take other vector paths for tensors at other addresses and alignments (a UNet loaded
# from safetensors vs the one that wrote it): identical weights, outputs a few ULPs apart (6.9e-7 seen).
SAME_WEIGHTS_RTOL, SAME_WEIGHTS_ATOL = 1e-5, 1e-6


def assert_same_unet(loaded: UNet2DConditionModel, original: UNet2DConditionModel) -> None:
    """The same weights (every tensor's name, shape, dtype and value, exactly) and the same function
    (outputs within float32 kernel rounding)."""
    a, b = loaded.state_dict(), original.state_dict()
    assert list(a) == list(b)
    for name, tensor in b.items():
        assert a[name].dtype == tensor.dtype and torch.equal(a[name], tensor), name
    inputs = unet_inputs(original)
    np.testing.assert_allclose(torch_output(loaded, inputs), torch_output(original, inputs),
                               rtol=SAME_WEIGHTS_RTOL, atol=SAME_WEIGHTS_ATOL)


def as_numpy(inputs: dict) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in inputs.items()}


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    """A diffusers UNet folder (config.json + diffusion_pytorch_model.safetensors)."""
    folder = tmp_path / "tiny-unet"
    tiny_unet().save_pretrained(folder)
    return folder


# Hang guards, not time limits: at least 3x the slowest run measured (tiny builds 0.5-2 min; the demo's
# build with its image check ~4 min on a loaded 2-core machine).
HANG_GUARD_SECONDS = 900
DEMO_HANG_GUARD_SECONDS = 1800


def rkconvert(*args: str, cwd: Path, timeout: float = HANG_GUARD_SECONDS) -> subprocess.CompletedProcess:
    """The real CLI in its own process, as a user runs it (on a wide terminal, so tables do not fold)."""
    return run_cli(list(args), cwd, {**os.environ, "COLUMNS": "250"}, timeout)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("rkconvert: error:")]


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory):
    """One `rkconvert build` of a tiny diffusers folder, shared by the tests that read its results.

    Returns (working folder, finished process, build folder, its report.json as first written);
    later tests may run more builds in the same folder.
    """
    work = tmp_path_factory.mktemp("tiny-build")
    tiny_unet().save_pretrained(work / "tiny-unet")
    result = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", cwd=work)
    out = work / "build" / "tiny-unet-rk3588"
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    return work, result, out, report


def once_per_run(tmp_path_factory, name: str, make) -> tuple[Path, list]:
    """`make(folder)` -> its process, run once per test run in a folder every worker then only reads: `make
    test` runs the suite on every core (pytest-xdist), and the first worker to ask makes it while the others
    wait. Returns (folder, the process's [args, returncode, stdout, stderr])."""
    base = tmp_path_factory.getbasetemp()
    run_folder = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, record = run_folder / name, run_folder / f"{name}.json"
    with FileLock(run_folder / f"{name}.lock"):
        if not record.exists():
            folder.mkdir(exist_ok=True)
            result = make(folder)
            record.write_text(json.dumps([result.args, result.returncode, result.stdout, result.stderr]))
    return folder, json.loads(record.read_text())


@pytest.fixture(scope="session")
def tiny_artifact_build(tmp_path_factory):
    """A tiny UNet's build that is only read, for tests that read its .rknn (tiny_build's folder is rebuilt
    later by tests that make a build fail there). Returns (working folder, build folder)."""
    def make(work):
        tiny_unet().save_pretrained(work / "tiny-unet")
        return rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--out", "tiny-unet-rk3588", cwd=work)

    work, (_, returncode, _, stderr) = once_per_run(tmp_path_factory, "tiny-artifact", make)
    assert returncode == 0, stderr
    return work, work / "tiny-unet-rk3588"


TINY_EVALUATION = {"steps": 4, "guidance_scale": 3.0,
                   "prompts": [{"category": "a", "prompt": "a red circle on the left", "seed": 11},
                               {"category": "b", "prompt": "a blue square at the top", "seed": 12}]}


def save_tiny_pipeline(folder: Path, unet: UNet2DConditionModel | None = None, schedule: str = "sd15-20step") -> None:
    """A diffusers StableDiffusionPipeline folder around the tiny UNet (seeded tiny CLIP, VAE, the schedule's
    scheduler: DDIM by default) that brings a two-prompt evaluation set (rkconvert.json), as a trained pipeline
    would."""
    from diffusers import StableDiffusionPipeline

    from calib_data import text_encoder
    from calib_data.recorder import tiny_vae
    from calib_data.schedules import SCHEDULES

    tokenizer, encoder = text_encoder.tiny(TINY_CONFIG["cross_attention_dim"], 0)
    pipe = StableDiffusionPipeline(vae=tiny_vae(), text_encoder=encoder, tokenizer=tokenizer, unet=unet or tiny_unet(),
                                   scheduler=SCHEDULES[schedule].make_scheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    (folder / "rkconvert.json").write_text(json.dumps({"evaluation": TINY_EVALUATION}))


@pytest.fixture(scope="session")
def tiny_pipeline_build(tmp_path_factory):
    """`rkconvert build` of a tiny pipeline folder at its own size, asked for (so a build of several sizes reuses
    it), only read: (working folder, process, build folder)."""
    def make(work):
        save_tiny_pipeline(work / "tiny-pipeline")
        return rkconvert("build", "--target", "rk3588", "--model", "tiny-pipeline", "--resolution", "64",
                         "--layer-report", "off", cwd=work)

    work, record = once_per_run(tmp_path_factory, "tiny-pipeline", make)
    return work, subprocess.CompletedProcess(*record), work / "build" / "tiny-pipeline-rk3588"


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory):
    """`rkconvert build --target rk3588 --model demo`, as `make demo` runs it; (process, build folder)."""
    work, record = once_per_run(tmp_path_factory, "demo", lambda work: rkconvert(
        "build", "--target", "rk3588", "--model", "demo", cwd=work, timeout=DEMO_HANG_GUARD_SECONDS))
    return subprocess.CompletedProcess(*record), work / "build" / "demo-rk3588"
