"""Bad input: one line naming the file and the problem, exit 2, nothing left behind."""

from __future__ import annotations

import json

import torch

from tests.conftest import error_lines, rkconvert, tiny_unet
from tests.test_toolkit_crash import flip_reproducer


def _fails_cleanly(tmp_path, *args, expect: str):
    result = rkconvert("build", "--target", "rk3588", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == error_lines(result), f"more than the error line: {result.stderr}"
    assert expect in lines[0]
    assert not (tmp_path / "build").exists()
    assert not list(tmp_path.rglob("*.rknn"))
    return lines[0]


def test_quantize_refuses_an_onnx_unet_in_one_line(tmp_path):
    import onnx

    onnx.save(flip_reproducer(), str(tmp_path / "unet.onnx"))
    result = rkconvert("quantize", "--model", "unet.onnx", "--out", "q", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == error_lines(result), result.stderr
    assert "unet.onnx: quantize reads a UNet into torch" in error_lines(result)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.onnx"]


def test_a_refused_diagnose_writes_nothing(tmp_path):
    """Refused after the model was exported into --out (the pass list is checked against the dtype the
    export settles): the folder goes again."""
    tiny_unet().save_pretrained(tmp_path / "tiny-unet")
    result = rkconvert("diagnose", "--target", "rk3588", "--model", "tiny-unet", "--skip-pass", "nope", "--out", "d",
                       cwd=tmp_path)
    assert result.returncode == 2 and "--skip-pass nope: no such pass" in error_lines(result)[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-unet"]


def test_missing_path(tmp_path):
    _fails_cleanly(tmp_path, "--model", "no/such/unet", expect="--model 'no/such/unet': no such file or directory")


def test_corrupt_safetensors(tmp_path, tiny_folder):
    weights = tiny_folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    line = _fails_cleanly(tmp_path, "--model", str(tiny_folder), expect=str(weights))
    assert "not a readable safetensors file" in line


def test_folder_that_is_not_a_unet(tmp_path):
    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "latent_channels": 4}))
    _fails_cleanly(tmp_path, "--model", str(vae), expect="a AutoencoderKL config, not a diffusers UNet2DConditionModel")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails_cleanly(tmp_path, "--model", str(empty), expect=f"{empty}: not a diffusers UNet folder (no config.json)")


def test_unknown_target(tmp_path):
    result = rkconvert("build", "--target", "rk9999", "--model", "demo", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "rkconvert: error: unknown target 'rk9999' (known: rk3588, rk3576, rk3562)"


def test_onnx_it_cannot_build(tmp_path):
    import onnx

    model = flip_reproducer()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, str(tmp_path / "flip.onnx"))
    _fails_cleanly(tmp_path, "--model", "flip.onnx",
                   expect="flip.onnx: input x has dynamic dimensions; export with static shapes")
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07 this is not protobuf")
    _fails_cleanly(tmp_path, "--model", "garbage.onnx", expect="garbage.onnx: not a readable ONNX model")


def test_pickled_module_without_trust(tmp_path):
    torch.save(tiny_unet(), tmp_path / "unet.pth")
    _fails_cleanly(tmp_path, "--model", "unet.pth", expect="unet.pth: holds pickled Python objects")


def test_bad_flags(tmp_path):
    _fails_cleanly(tmp_path, "--model", "demo", "--resolution", "100", expect="--resolution 100: must be a positive multiple of 64")
    _fails_cleanly(tmp_path, "--model", "demo", "--skip-pass", "nope", expect="--skip-pass nope: no such pass")
    result = rkconvert("build", "--model", "demo", cwd=tmp_path)
    assert result.returncode == 2
    assert error_lines(result) == ["rkconvert: error: Missing option '--target'."]
    _fails_cleanly(tmp_path, "--model", "demo", "--dtype", "float16", "--quant-algorithm", "mmse",
                   expect="--quant-algorithm mmse is about int8: --dtype float16 quantizes nothing")
    _fails_cleanly(tmp_path, "--model", "demo", "--dtype", "float16", "--toolkit-auto-hybrid", "0.99",
                   expect="--toolkit-auto-hybrid 0.99 is about int8: --dtype float16 quantizes nothing")
    _fails_cleanly(tmp_path, "--model", "demo", "--npu-models", "vae",
                   expect="Invalid value for '--npu-models': 'vae': text_encoder, vae_decoder (comma-separated), or none")
    _fails_cleanly(tmp_path, "--model", "demo", "--resolution", "128,128",
                   expect="'128,128': a size in pixels, or several different ones separated by commas (256,384,512)")
