"""The preset architectures beside SD 1.5's (miniature widths; SD 2.1's pruned, as the seed project pruned
SD-Turbo) convert faithfully for rk3588, with the default pass list and with graph simplification on. SD
1.5's four stages are the demo's, built by every run (tests/conftest.py demo_build)."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file

from converter.builds.builder import build
from converter.builds.request import BuildRequest, Checks, Gates, PassChoice
from converter.common.progress import Progress
from converter.models.model_source import resolve
from converter.models.presets import preset_config
from targets import get_chip
from tools.make_pruned_unet import prune_unet

RESOLUTION = 64  # 8x8 latent: every stage of the 4-stage presets still halves exactly


@pytest.fixture(scope="module")
def pruned_folder(tmp_path_factory):
    """SD 2.1's miniature with one layer per block (as BK-SDM prunes depth; the toolkit's build of the full-depth
    miniature took 85 s, a tenth of the suite's toolkit time), pruned to uneven widths."""
    from diffusers import UNet2DConditionModel

    folder = tmp_path_factory.mktemp("pruned-sd21-mini")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**preset_config("sd21:mini"), "layers_per_block": 1}).eval()
    unet.save_config(folder)
    prune_unet(unet, 0.3, RESOLUTION)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, folder / "diffusion_pytorch_model.safetensors")
    return folder


# SD 2.1's architecture (linear proj_in/out, 5/10/20/20 heads) through its pruned miniature (uneven widths: the
# harder case), simplified (onnxsim, then split_fused_qkv_projection, on top of the default list). Each build is
# 30-40 s of the suite's budget; both passes are also checked one by one on the tiny UNet
# (test_simplify_and_qkv_split), and onnxsim without the split by test_diagnose.
BUILDS = [("bk-sdm-tiny:mini", False), ("pruned", True)]


@pytest.mark.parametrize("model, simplify", BUILDS, ids=["bk-sdm-tiny:mini-exported", "sd21:mini-pruned-simplified"])
def test_builds_reach_60_db(model, simplify, pruned_folder, tmp_path):
    source = resolve(str(pruned_folder) if model == "pruned" else model)
    req = BuildRequest(source, get_chip("rk3588"), tmp_path / "out", resolution=RESOLUTION, gates=Gates(min_psnr=60),
                       checks=Checks(layer_report="off"), passes=PassChoice(enable=("simplify",) if simplify else ()))
    report = build(req, Progress(Console(file=open(tmp_path / "progress.txt", "w")))).to_json()
    assert report["output_psnr_db"] >= 60
    applied = [p["pass"] for p in report["passes"]]
    assert ("simplify" in applied) == simplify
    if simplify:
        split = next(p for p in report["passes"] if p["pass"] == "split_fused_qkv_projection")
        assert split["rewrites"], "onnxsim fused no q/k/v projection: the pair of passes is not exercised"
