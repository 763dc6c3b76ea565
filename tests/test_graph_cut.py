"""A graph cut into parts (converter/builds/graph_cut.py): the parts run one after another in ONNX Runtime
give the whole graph's output, each holds about its share of the weights, and only activations cross."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from converter.builds import graph_cut
from converter.builds.pass_selection import instances
from converter.common import onnx_files, onnx_runtime
from converter.models.tracing import trace
from targets import get_chip
from tests.conftest import (
    SAME_WEIGHTS_ATOL,
    SAME_WEIGHTS_RTOL,
    as_numpy,
    tiny_unet,
    unet_inputs,
)

PASSES = ["host_time_projection", "tile_attention", "pad_conv_channels"]


@pytest.fixture(scope="module")
def passes_model(tmp_path_factory):
    """A tiny UNet after the passes the rk3588 build runs, its weights external as a full-size build's are,
    and the feed its graph takes (the host program's output in place of the timestep)."""
    folder = tmp_path_factory.mktemp("cut")
    trace(tiny_unet(), 64, folder / "traced.onnx")
    model = onnx_files.load(folder / "traced.onnx")
    host = []
    for graph_pass in instances(PASSES, get_chip("rk3588"), "2"):
        model, _, programs = graph_pass.run(model)
        host += programs
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=onnx_files.EXTERNAL_MIN_BYTES)
    feed = as_numpy(unet_inputs(tiny_unet()))
    feed.update(onnx_runtime.run(onnx_runtime.session(host[0].model), {"timestep": feed.pop("timestep")}))
    return folder / "model.onnx", feed


def _chained(parts: list[graph_cut.Part], feed: dict[str, np.ndarray], folder) -> dict[str, np.ndarray]:
    """The parts saved as files and run in turn, each fed by name from the inputs and earlier outputs."""
    tensors = dict(feed)
    for i, part in enumerate(parts):
        onnx_files.save(part.model, folder / f"part{i}.onnx")
        out = onnx_runtime.run(onnx_runtime.session(folder / f"part{i}.onnx"), {k: tensors[k] for k in part.inputs})
        assert list(out) == part.outputs
        tensors.update(out)
    return tensors


@pytest.mark.parametrize("count", [2, 3])
def test_parts_in_turn_give_the_whole_graphs_output(passes_model, count, tmp_path):
    path, feed = passes_model
    whole = onnx_runtime.run(onnx_runtime.session(path), feed)
    parts = graph_cut.parts(onnx_files.load_lazy(path), count)
    assert len(parts) == count
    got = _chained(parts, feed, tmp_path)
    np.testing.assert_allclose(got["out_sample"], whole["out_sample"], rtol=SAME_WEIGHTS_RTOL, atol=SAME_WEIGHTS_ATOL)
    assert "out_sample" in parts[-1].outputs and all("out_sample" not in p.outputs for p in parts[:-1])


@pytest.mark.parametrize("count", [2, 3])
def test_each_part_holds_its_share_of_the_weights_and_takes_only_activations(passes_model, count):
    path, feed = passes_model
    model = onnx_files.load_lazy(path)
    total = onnx_files.weight_bytes(model)
    parts = graph_cut.parts(model, count)
    held = [onnx_files.weight_bytes(p.model) for p in parts]
    before = np.cumsum(held)[:-1]
    for j, weight in enumerate(before, start=1):  # each cut within the window of its share
        assert abs(weight - total * j / count) <= graph_cut.WINDOW * total + max(held) * 0.05, (held, total)
    assert max(held) <= graph_cut.LARGEST * total / count + max(held) * 0.05, (held, total)
    # Every node but the constants' is in exactly one part.
    constants = {n.name for p in parts[1:] for n in p.model.graph.node} & {n.name for n in parts[0].model.graph.node}
    names = [n.name for p in parts for n in p.model.graph.node if n.name not in constants]
    assert sorted(names) == sorted(n.name for n in model.graph.node if n.name not in constants)
    assert all(n.op_type in ("Constant", "Identity") for p in parts for n in p.model.graph.node if n.name in constants)
    for part in parts[1:]:
        handed = [i for i in part.model.graph.input if i.name not in feed]
        assert handed, "a later part takes something from an earlier one"
        for value in handed:
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
            assert onnx_files.static_shape(value) is not None
    # A UNet cut once: the skip connections, the middle's output and the time embedding cross, little else.
    if count == 2:
        assert len([i for i in parts[1].inputs if i not in feed]) <= 8, parts[1].inputs


def test_a_graph_with_control_flow_is_refused():
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "b", [],
                               [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)], "g",
                              [helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    with pytest.raises(ValueError, match="control flow"):
        graph_cut.parts(helper.make_model(graph), 2)
