"""W8A16: quantize, both saved forms, bit-exact ingest, float16 lowering, and clear refusals."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from converter.common import onnx_files, onnx_runtime
from converter.common.errors import UserError
from converter.models.model_source import resolve
from converter.quantize.command import ONNX_NAME
from converter.w8a16 import weight_dequantize
from converter.w8a16.checkpoint import FORMAT, SCALE_SUFFIX
from converter.w8a16.int8_weights import QMAX, dequantize, quantize
from tests.conftest import as_numpy, error_lines, rkconvert, tiny_unet, torch_output, unet_inputs


@pytest.fixture(scope="module")
def quantized(tiny_build, tmp_path_factory):
    work, _, _, _ = tiny_build
    out = tmp_path_factory.mktemp("w8a16") / "tiny-w8a16"
    result = rkconvert("quantize", "--model", "tiny-unet", "--out", str(out), cwd=work)
    assert result.returncode == 0, result.stderr
    return work, out


def test_histogram_range_beats_min_max_on_heavy_tails_and_never_loses():
    rng = np.random.default_rng(0)
    heavy = rng.standard_t(3, (16, 4608)) * 0.02  # 512 input channels x 3x3: a long tail of large weights
    flat = rng.uniform(-0.05, 0.05, (16, 4608))  # no tail: nothing to gain by clipping
    w = np.concatenate([heavy, flat]).astype(np.float32)
    q, scale, info = quantize(w)
    assert q.dtype == np.int8 and np.abs(q).max() <= QMAX
    minmax = np.abs(w).max(axis=1) / QMAX
    mse = ((w - dequantize(q, scale)) ** 2).mean(axis=1)
    mse_minmax = ((w - dequantize(np.round(w / minmax[:, None]).astype(np.int8), minmax)) ** 2).mean(axis=1)
    assert np.all(mse <= mse_minmax * (1 + 1e-6))
    assert (scale[:16] < minmax[:16]).sum() >= 12 and (mse[:16] / mse_minmax[:16]).mean() < 0.99
    assert info["histogram_channels"] >= 12


def test_both_forms_hold_the_same_int8_weights_bit_exact(quantized):
    work, out = quantized
    weights = out / "diffusion_pytorch_model.safetensors"
    with safe_open(str(weights), "pt") as f:
        assert f.metadata()["format"] == FORMAT
    state = load_file(weights)
    int8 = {k: v.numpy() for k, v in state.items() if v.dtype == torch.int8}
    summary = json.loads((out / "quantize.json").read_text())
    assert len(int8) == summary["layers"] == summary["onnx_dequantize_nodes"] > 50

    model = onnx_files.load(out / ONNX_NAME)
    folded, onnx_int8 = weight_dequantize.fold(model, out / ONNX_NAME)
    by_content = {v[0].tobytes(): v[1] for v in onnx_int8.values()}
    for key, q in int8.items():
        assert q.tobytes() in by_content, key
        np.testing.assert_array_equal(by_content[q.tobytes()], state[key + SCALE_SUFFIX].numpy())

    unet = resolve(str(out)).load_unet()
    assert unet.rkconvert_w8a16_layers == len(int8)
    params = dict(unet.named_parameters())
    for key, q in int8.items():
        np.testing.assert_array_equal(params[key].detach().numpy(),
                                      dequantize(q, state[key + SCALE_SUFFIX].numpy()))
    inputs = unet_inputs(unet)
    ort = onnx_runtime.run(onnx_runtime.session(out / ONNX_NAME), as_numpy(inputs))["out_sample"]
    np.testing.assert_allclose(ort, torch_output(unet, inputs), atol=1e-4)
    assert np.abs(torch_output(unet, inputs) - torch_output(tiny_unet(), inputs)).max() > 0  # it is quantized


def test_float16_lowering_of_both_forms(quantized):
    work, out = quantized
    psnr = []
    for model, folder in ((str(out), "from-folder"), (str(out / ONNX_NAME), "from-onnx")):
        result = rkconvert("build", "--target", "rk3588", "--model", model, "--out", folder,
                           "--layer-report", "off", cwd=work)
        assert result.returncode == 0, result.stderr
        report = json.loads((work / folder / "report.json").read_text())
        assert report["weights"].startswith(f"w8a16: {json.loads((out / 'quantize.json').read_text())['layers']} int8")
        assert report["artifact_to_onnx"] == round(report["artifact_bytes"] / report["onnx_bytes"], 4)
        psnr.append(report["output_psnr_db"])
    assert min(psnr) >= 60 and abs(psnr[0] - psnr[1]) < 0.01


def test_the_weight_only_qdq_onnx_builds_as_w8a8(quantized):
    work, out = quantized
    result = rkconvert("build", "--target", "rk3588", "--model", str(out / ONNX_NAME), "--dtype", "w8a8",
                       "--samples", "6", "--trajectories", "2", "--check-samples", "2", "--min-psnr", "25",
                       "--layer-report", "off", "--out", "qdq-w8a8", cwd=work)
    assert result.returncode == 0, result.stderr
    report = json.loads((work / "qdq-w8a8" / "report.json").read_text())
    assert report["dtype"] == "w8a8" and report["calibration"]["count"] == 6
    assert report["output_psnr_db"] >= 25 and "PSNR" in result.stdout


def test_other_quantized_layouts_are_refused(quantized, tmp_path):
    work, out = quantized
    state = load_file(out / "diffusion_pytorch_model.safetensors")
    key = next(k for k, v in state.items() if v.dtype == torch.int8)
    bad = tmp_path / "no-scale"
    bad.mkdir()
    (bad / "config.json").write_text((out / "config.json").read_text())
    save_file({k: v for k, v in state.items() if k != key + SCALE_SUFFIX}, bad / "diffusion_pytorch_model.safetensors")
    result = rkconvert("build", "--target", "rk3588", "--model", str(bad), cwd=work)
    assert result.returncode == 2
    assert f"int8 tensor {key} has no float32 per-output-channel {key}{SCALE_SUFFIX}" in error_lines(result)[0]

    model = onnx_files.load(out / ONNX_NAME)
    zero = next(t for t in model.graph.initializer if t.name.endswith("_zero_point"))
    zero.CopyFrom(numpy_helper.from_array(np.ones(tuple(zero.dims), np.int8), zero.name))
    onnx.save(model, str(tmp_path / "asymmetric.onnx"))
    with pytest.raises(UserError, match="non-zero zero point"):
        weight_dequantize.fold(onnx_files.load(tmp_path / "asymmetric.onnx"), tmp_path / "asymmetric.onnx")

    activation = onnx_files.load(out / ONNX_NAME)
    node = next(n for n in activation.graph.node if n.op_type == "Conv")
    activation.graph.node.append(onnx.helper.make_node("QuantizeLinear", [node.output[0], "s", "z"], ["q"], name="act_q"))
    with pytest.raises(UserError, match="QuantizeLinear act_q: quantized activations"):
        weight_dequantize.fold(activation, tmp_path / "qdq.onnx")
