"""The UNet family (converter/models/family.py): what the tracer makes of a config is what every reader of
the ONNX infers back, and a pipeline's UNet call becomes the graph's feeds row by row. No toolkit here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from converter.common.errors import UserError
from converter.models.family import Signature
from converter.models.tracing import trace
from converter.models.unet_interface import check_unet
from tests.conftest import TINY_RESOLUTION, error_lines, rkconvert, tiny_unet


@pytest.mark.parametrize("overrides", [{}, {"time_cond_proj_dim": 16}], ids=["sd", "lcm"])
def test_the_traced_graph_has_the_inputs_the_config_names(tmp_path, overrides):
    unet = tiny_unet(**overrides)
    signature = Signature.of_config(unet.config, TINY_RESOLUTION)
    path = tmp_path / "unet.onnx"
    trace(unet, TINY_RESOLUTION, path)
    specs = check_unet(onnx.load(str(path)), path, signature.names)
    assert list(specs) == list(signature.names)
    assert {name: tuple(shape) for name, (shape, _) in specs.items()} == signature.shapes()
    assert Signature.of_specs(specs) == signature
    assert signature.embeds_guidance == bool(overrides)


def test_a_pipeline_call_becomes_one_feed_per_row():
    """As StableDiffusionPipeline calls its UNet under classifier-free guidance: a batch of [uncond, cond], one
    shared timestep, the LCM embedding as a keyword."""
    signature = Signature.of_config(tiny_unet(time_cond_proj_dim=16).config, TINY_RESOLUTION)
    g = torch.Generator().manual_seed(0)
    sample, states, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g), torch.randn(
        2, 16, generator=g)
    rows = signature.rows((sample, torch.tensor(601)), {"encoder_hidden_states": states, "timestep_cond": cond})
    assert len(rows) == 2
    for i, row in enumerate(rows):
        assert list(row) == list(signature.names)
        np.testing.assert_array_equal(row["sample"], sample[i:i + 1].numpy())
        np.testing.assert_array_equal(row["encoder_hidden_states"], states[i:i + 1].numpy())
        np.testing.assert_array_equal(row["timestep_cond"], cond[i:i + 1].numpy())
        assert row["timestep"].tolist() == [601.0] and row["timestep"].dtype == np.float32
        assert {name: value.shape for name, value in row.items()} == signature.shapes()


def test_the_check_inputs_embed_the_deployed_guidance():
    from converter.board.samplers import guidance_embedding

    lcm = Signature.of_config(tiny_unet(time_cond_proj_dim=16).config, TINY_RESOLUTION)
    np.testing.assert_array_equal(lcm.fixed_inputs(7.5)["timestep_cond"], guidance_embedding(7.5, 16))
    assert lcm.sources() == {"timestep_cond": "guidance"}
    assert Signature.of_config(tiny_unet().config, TINY_RESOLUTION).fixed_inputs(7.5) == {}


def test_a_family_rkconvert_does_not_build_is_refused_in_one_line(tmp_path):
    """A UNet conditioned on a text embedding of its own (addition_embed_type "text", Kandinsky's kind)
    would end in a traceback inside diffusers' forward, called without it."""
    with pytest.raises(UserError, match="addition_embed_type 'text'"):
        Signature.of_config({"addition_embed_type": "text", "block_out_channels": [32, 64], "in_channels": 4,
                             "cross_attention_dim": 32}, 64)
    tiny_unet(addition_embed_type="text").save_pretrained(tmp_path / "text-unet")
    result = rkconvert("build", "--target", "rk3588", "--model", "text-unet", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert error_lines(result) == result.stderr.strip().splitlines() == [
        "rkconvert: error: text-unet: UNet addition_embed_type 'text': rkconvert builds SD 1.x/2.x, LCM and SDXL "
        "('text_time') UNets"]
    assert not (tmp_path / "out" / "model.rknn").exists()
