"""`build` and `diagnose` take any ONNX graph: a UNet exported from the original LDM code (inputs x, timesteps,
context) is a UNet; a VAE decoder or a text encoder is built and checked as it is, on inputs drawn from its
declared shapes and dtypes (token ids below the table they index)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from converter.common import onnx_runtime
from converter.models import pipeline_models
from tests.conftest import TINY_RESOLUTION, as_numpy, error_lines, rkconvert, save_tiny_pipeline, tiny_unet, unet_inputs


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """A tiny UNet exported with the LDM code's input names, and a tiny pipeline's text encoder and VAE decoder
    as a build traces them beside the UNet (pipeline_models)."""
    work = tmp_path_factory.mktemp("graphs")
    unet = tiny_unet()
    inputs = unet_inputs(unet)
    with torch.no_grad():
        torch.onnx.export(unet, tuple(inputs.values()), str(work / "ldm_unet.onnx"), kwargs={"return_dict": False},
                          input_names=["x", "timesteps", "context"], output_names=["out"], opset_version=17,
                          dynamo=False)
    save_tiny_pipeline(work / "pipeline")
    pipeline_models.export(work / "pipeline", TINY_RESOLUTION, work)  # text_encoder.onnx, vae_decoder.onnx
    return work, inputs


def _built(work, name, *extra):
    result = rkconvert("build", "--target", "rk3588", "--model", f"{name}.onnx", "--layer-report", "off", *extra,
                       cwd=work)
    assert result.returncode == 0, result.stderr
    out = work / "build" / f"{name}-rk3588"
    return json.loads((out / "report.json").read_text()), out, result.stdout


def test_an_ldm_named_unet_is_a_unet(graphs):
    work, inputs = graphs
    report, out, _ = _built(work, "ldm_unet")
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
    report, out, summary = _built(work, name)
    assert report["graph"] == "graph" and report["resolution"] is None and report["output_psnr_db"] >= 50
    assert "ms per run at" in summary and "UNet step" not in summary  # the cost estimate's unit
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


class _TimeEmbedding(torch.nn.Module):
    """A UNet's time projection and embedding alone, as diffusers builds them (SD 1.5's flip_sin_to_cos)."""

    def __init__(self):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.project, self.embed = Timesteps(32, flip_sin_to_cos=True, downscale_freq_shift=0), TimestepEmbedding(32, 64)

    def forward(self, timestep):
        return self.embed(self.project(timestep))


def test_diagnose_reduces_a_graph_that_is_not_a_unet_and_names_the_fix(tmp_path):
    """The time projection's crash pattern without the rest of the UNet (input `timestep` alone): probed,
    classified, reduced to the three nodes that crash and recognised; the fix it names builds it."""
    torch.manual_seed(0)
    torch.onnx.export(_TimeEmbedding().eval(), (torch.tensor([500.0]),), str(tmp_path / "time.onnx"),
                      input_names=["timestep"], output_names=["embedding"], opset_version=17, dynamo=False)
    result = rkconvert("diagnose", "--target", "rk3588", "--model", "time.onnx", "--skip-pass", "host_time_projection",
                       "--skip-pass", "drop_unit_slice_steps", "--out", "d", cwd=tmp_path)
    assert result.returncode != 2, result.stderr
    diagnosis = json.loads((tmp_path / "d" / "diagnosis" / "diagnosis.json").read_text())
    assert diagnosis["failure"]["kind"] == "crash"
    repro = onnx.load(str(tmp_path / "d" / "diagnosis" / "repro.onnx"))
    assert sorted(n.op_type for n in repro.graph.node) == ["Concat", "Slice", "Slice"]
    assert "fix: graph pass host_time_projection" in result.stdout
    report, _, _ = _built(tmp_path, "time")  # the default passes include the fix
    assert report["graph"] == "graph"
    assert [p["rewrites"] for p in report["passes"] if p["pass"] == "host_time_projection"][0]
