"""Tracing gives a static-shape opset-17 ONNX that computes what the diffusers UNet computes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from converter.common import onnx_files, onnx_runtime
from converter.common.errors import UserError
from converter.models import tracing
from converter.models.unet_interface import check_unet
from tests.conftest import TINY_RESOLUTION, as_numpy, tiny_unet, torch_output, unet_inputs


def test_traced_onnx_matches_torch(tmp_path):
    unet = tiny_unet()
    path = tmp_path / "unet.onnx"
    assert tracing.trace(unet, TINY_RESOLUTION, path) == [path]
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 17
    specs = check_unet(model, path)
    assert specs["sample"][0] == [1, 4, 8, 8]
    assert specs["encoder_hidden_states"][0] == [1, 77, 32]
    assert any(n.name.startswith("/down_blocks.0/attentions.0/") for n in model.graph.node)

    inputs = unet_inputs(unet)
    ort_out = onnx_runtime.run(onnx_runtime.session(path), as_numpy(inputs))[tracing.OUTPUT_NAME]
    np.testing.assert_allclose(ort_out, torch_output(unet, inputs), atol=1e-4)


def test_large_models_keep_weights_in_one_external_file(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_ABOVE", 0)
    path = tmp_path / "unet.onnx"
    files = tracing.trace(tiny_unet(), TINY_RESOLUTION, path)
    assert files == [path, tmp_path / "unet.onnx.data"]
    assert files[1].stat().st_size > 4 * path.stat().st_size
    locations = {e.value for t in onnx.load(str(path), load_external_data=False).graph.initializer
                 for e in t.external_data if e.key == "location"}
    assert locations == {"unet.onnx.data"}


@pytest.mark.parametrize("resolution", [0, 60, 72])
def test_resolution_must_divide_into_every_stage(tmp_path, resolution):
    with pytest.raises(UserError, match="multiple of 16"):
        tracing.trace(tiny_unet(), resolution, tmp_path / "unet.onnx")
