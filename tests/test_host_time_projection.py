"""host_time_projection: same outputs under ONNX Runtime, and the RKNN build that crashed now converts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from converter.common import onnx_runtime
from converter.common.errors import BuildFailed
from converter.models import tracing
from converter.models.model_source import resolve
from graph_passes import CATALOGUE
from tests.conftest import as_numpy, tiny_unet, unet_inputs
from tests.rknn_helpers import rknn_psnr, simulate
from tools.make_pruned_unet import prune_unet

PASS = CATALOGUE["host_time_projection"]
MODELS = {
    "tiny": lambda: tiny_unet(),
    "sd15:mini": lambda: resolve("sd15:mini").load_unet(),
    "sd21:mini": lambda: resolve("sd21:mini").load_unet(),
    "bk-sdm-tiny:mini": lambda: resolve("bk-sdm-tiny:mini").load_unet(),
    "pruned": lambda: prune_unet(tiny_unet(), 0.25, 64),
}


def traced(tmp_path, unet, resolution=64):
    path = tmp_path / "unet.onnx"
    tracing.trace(unet, resolution, path)
    return onnx.load(str(path)), unet_inputs(unet, resolution)


def apply(model):
    after, report, host = PASS.run(model)
    return after, report, host


def feeds_after(host, inputs: dict) -> dict:
    feed = as_numpy(inputs)
    t_emb = onnx_runtime.run(onnx_runtime.session(host[0].model), feed)
    return {**{k: v for k, v in feed.items() if k != "timestep"}, **t_emb}


@pytest.mark.parametrize("name", MODELS)
def test_outputs_equal_under_onnxruntime(tmp_path, name):
    before, inputs = traced(tmp_path, MODELS[name]())
    after, report, host = apply(before)
    assert len(report.rewrites) == 1 and not report.skipped
    assert [i.name for i in after.graph.input] == ["sample", "t_emb", "encoder_hidden_states"]
    ops = Counter(n.op_type for n in after.graph.node)
    assert ops["Sin"] == ops["Cos"] == 0
    assert Counter(n.op_type for n in host[0].model.graph.node)["Sin"] == 1

    for timestep in (1.0, 321.0, 999.0):
        inputs["timestep"][:] = timestep
        ref = onnx_runtime.run(onnx_runtime.session(before), as_numpy(inputs))
        out = onnx_runtime.run(onnx_runtime.session(after), feeds_after(host, inputs))
        assert np.abs(out["out_sample"] - ref["out_sample"]).max() <= 1e-5


def test_second_run_finds_nothing(tmp_path):
    before, _ = traced(tmp_path, tiny_unet())
    once, _, _ = apply(before)
    twice, report, host = apply(once)
    assert report.rewrites == [] and host == []
    assert twice is once


def test_rknn_crashes_without_the_pass_and_converts_with_it(tmp_path):
    before, inputs = traced(tmp_path, tiny_unet())
    with pytest.raises(BuildFailed, match=r"died with SIGSEGV during build\(\)"):
        simulate(tmp_path / "raw", before, as_numpy(inputs))
    assert not (tmp_path / "raw" / "rknn" / "model.rknn").exists()

    after, _, host = apply(before)
    assert rknn_psnr(tmp_path / "pass", after, feeds_after(host, inputs)) >= 60
    assert (tmp_path / "pass" / "rknn" / "model.rknn").stat().st_size > 0
