"""`build` and `diagnose` take any ONNX graph: a UNet exported from the original LDM code (inputs x, timesteps,
context) is a UNet; a VAE decoder or a text encoder is built and checked as it is, on inputs drawn from its
declared shapes and dtypes (token ids below the table they index)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from calib_data import text_encoder
from calib_data.recorder import tiny_vae
from converter.common import onnx_runtime
from tests.conftest import as_numpy, error_lines, rkconvert, tiny_unet, unet_inputs


class _Decode(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode(latents, return_dict=False)[0]


class _Encode(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids):
        return self.encoder(input_ids, return_dict=False)[0]


def _export(module, args, path, inputs, kwargs=None):
    torch.onnx.export(module, args, str(path), kwargs=kwargs, input_names=inputs, output_names=["out"],
                      opset_version=17, dynamo=False)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    work = tmp_path_factory.mktemp("graphs")
    unet = tiny_unet()
    inputs = unet_inputs(unet)
    with torch.no_grad():
        _export(unet, tuple(inputs.values()), work / "ldm_unet.onnx", ["x", "timesteps", "context"],
                {"return_dict": False})
        _export(_Decode(tiny_vae().eval()), (torch.randn(1, 4, 8, 8),), work / "vae_decoder.onnx", ["latents"])
        _export(_Encode(text_encoder.tiny(32, 0)[1]), (torch.zeros(1, 77, dtype=torch.int64),),
                work / "text_encoder.onnx", ["input_ids"])
    return work, inputs


def _built(work, name, *extra):
    result = rkconvert("build", "--target", "rk3588", "--model", f"{name}.onnx", "--layer-report", "off", *extra,
                       cwd=work)
    assert result.returncode == 0, result.stderr
    return json.loads((work / "build" / f"{name}-rk3588" / "report.json").read_text()), work / "build" / f"{name}-rk3588"


def test_an_ldm_named_unet_is_a_unet(graphs):
    work, inputs = graphs
    report, out = _built(work, "ldm_unet")
    assert report["graph"] == "unet" and report["resolution"] == 64 and report["output_psnr_db"] >= 50
    assert [t["name"] for t in report["rknn_file"]["inputs"]] == ["sample", "t_emb", "encoder_hidden_states"]
    # The renamed graph computes what the user's does, name for name.
    theirs = onnx_runtime.session(work / "ldm_unet.onnx")
    ours = onnx_runtime.session(out / "stages" / "export" / "model.onnx")
    feed = as_numpy(inputs)
    expected = onnx_runtime.run(theirs, dict(zip(["x", "timesteps", "context"], feed.values())))["out"]
    np.testing.assert_array_equal(onnx_runtime.run(ours, feed)["out"], expected)


@pytest.mark.parametrize("name", ["vae_decoder", "text_encoder"])
def test_other_graphs_build_as_they_are(graphs, name):
    work, _ = graphs
    report, out = _built(work, name)
    assert report["graph"] == "graph" and report["resolution"] is None and report["output_psnr_db"] >= 50
    feed = {p.name.split("-", 1)[1][:-4]: np.load(p) for p in (out / "stages" / "reference" / "inputs").iterdir()
            if p.name.startswith("0-")}
    if name == "text_encoder":  # token ids, valid for the embedding table (the tiny vocabulary's 190 rows)
        ids = feed["input_ids"]
        assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 190 and len(np.unique(ids)) > 50
    else:
        assert feed["latents"].dtype == np.float32 and abs(float(feed["latents"].std()) - 1) < 0.2


def test_a_graph_is_not_quantized(graphs):
    work, _ = graphs
    result = rkconvert("build", "--target", "rk3588", "--model", "vae_decoder.onnx", "--dtype", "w8a8",
                       "--out", "q", cwd=work)
    # Refused once the exported graph shows what it is (after stages export and passes): one line, nothing kept.
    assert result.returncode == 2 and error_lines(result) == result.stderr.strip().splitlines()[-1:], result.stderr
    assert "--dtype w8a8: vae_decoder.onnx is not a UNet" in error_lines(result)[0]
    assert not (work / "q").exists()


def test_diagnose_reduces_any_graph(tmp_path):
    """A graph of no known kind (its input is `x`) that kills the toolkit: probed, classified, reduced to the
    three nodes that crash, and recognised."""
    from tests.test_toolkit_crash import flip_reproducer

    model = flip_reproducer()
    graph = model.graph
    graph.node[0].input[0] = graph.node[1].input[0] = "doubled"
    graph.node.insert(0, onnx.helper.make_node("Relu", ["x"], ["positive"], name="relu"))
    graph.node.insert(1, onnx.helper.make_node("Add", ["positive", "positive"], ["doubled"], name="double"))
    onnx.save(model, str(tmp_path / "block.onnx"))
    result = rkconvert("diagnose", "--target", "rk3588", "--model", "block.onnx", "--out", "d", cwd=tmp_path)
    assert result.returncode != 2, result.stderr
    diagnosis = json.loads((tmp_path / "d" / "diagnosis" / "diagnosis.json").read_text())
    assert diagnosis["failure"]["kind"] == "crash"
    repro = onnx.load(str(tmp_path / "d" / "diagnosis" / "repro.onnx"))
    assert sorted(n.op_type for n in repro.graph.node) == ["Concat", "Slice", "Slice"]
    assert "flip-sin-cos-slice-concat" in result.stdout
