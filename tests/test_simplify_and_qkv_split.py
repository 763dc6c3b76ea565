"""simplify (onnxsim) and split_fused_qkv_projection: equal under ONNX Runtime; together faithful on RKNN."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from converter.common import onnx_runtime
from converter.models import tracing
from graph_passes import CATALOGUE
from tests.conftest import TINY_RESOLUTION, tiny_unet, unet_inputs
from tests.rknn_helpers import rknn_psnr

SIMPLIFY = CATALOGUE["simplify"]
SPLIT = CATALOGUE["split_fused_qkv_projection"]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The tiny UNet with the time projection on the host: as exported, simplified, and fixed."""
    folder = tmp_path_factory.mktemp("qkv")
    unet = tiny_unet()
    tracing.trace(unet, TINY_RESOLUTION, folder / "unet.onnx")
    exported, _, host = CATALOGUE["host_time_projection"].run(onnx.load(str(folder / "unet.onnx")))
    simplified, simplify_report, _ = SIMPLIFY.run(exported)
    fixed, split_report, _ = SPLIT.run(simplified)
    inputs = {k: v.numpy() for k, v in unet_inputs(unet).items()}
    feed = {**{k: v for k, v in inputs.items() if k != "timestep"},
            **onnx_runtime.run(onnx_runtime.session(host[0].model), inputs)}
    return {"exported": exported, "simplified": simplified, "fixed": fixed, "feed": feed,
            "reports": (simplify_report, split_report), "folder": folder}


def _out(model, feed):
    return onnx_runtime.run(onnx_runtime.session(model), feed)["out_sample"]


def test_both_passes_keep_onnxruntime_outputs(graphs):
    simplify_report, split_report = graphs["reports"]
    assert len(graphs["simplified"].graph.node) < 0.7 * len(graphs["exported"].graph.node), simplify_report.rewrites
    assert len(split_report.rewrites) == 4  # one self-attention in each of the tiny UNet's 4 transformer blocks
    ref = _out(graphs["exported"], graphs["feed"])
    for stage in ("simplified", "fixed"):
        assert np.abs(_out(graphs[stage], graphs["feed"]) - ref).max() <= 1e-4, stage
    splits = [n for n in graphs["fixed"].graph.node if n.op_type == "Split"]
    assert not splits
    names = [n.name for n in graphs["fixed"].graph.node if "fused_projection" in n.name]
    assert "/down_blocks.0/attentions.0/transformer_blocks.0/attn1/fused_projection.0/MatMul" in names


def test_rknn_converts_the_fused_projection_wrongly_and_the_split_one_faithfully(graphs):
    folder, feed = graphs["folder"], graphs["feed"]
    broken = rknn_psnr(folder / "simplified", graphs["simplified"], feed)
    fixed = rknn_psnr(folder / "fixed", graphs["fixed"], feed)
    assert broken < 40, f"the toolkit converted the fused q/k/v projection faithfully ({broken:.1f} dB)"
    assert fixed >= 60
