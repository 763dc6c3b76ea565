"""Weights left in their file: the passes rewrite a graph whose weights are external without reading the
ones they do not touch, and give the same graph and weights as on the model loaded whole."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from converter.builds.pass_selection import instances
from converter.common import onnx_files, onnx_runtime
from converter.common import external_weights
from converter.common.errors import UserError
from converter.models.tracing import trace
from targets import get_chip
from tests.conftest import SAME_WEIGHTS_ATOL, SAME_WEIGHTS_RTOL, as_numpy, tiny_unet, unet_inputs

# Every pass that reads weight values (host program, GroupNorm scale/bias, padded convolutions) and the
# attention tiling, on a tiny UNet whose every weight of 1 KB or more is external (at 32 px: a 2x2 stage,
# where group_norm_as_conv rewrites).
RESOLUTION = 32
PASSES = ["host_time_projection", "group_norm_as_conv", "tile_attention", "pad_conv_channels"]


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    folder = tmp_path_factory.mktemp("external")
    trace(tiny_unet(), RESOLUTION, folder / "inline.onnx")
    model = onnx.load(str(folder / "inline.onnx"))
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=onnx_files.EXTERNAL_MIN_BYTES)
    return folder


def _rewrite(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list]:
    reports, programs = [], []
    for graph_pass in instances(PASSES, get_chip("rk3562"), "2"):
        model, report, host = graph_pass.run(model)
        reports.append(report.as_dict())
        programs += host
    return model, reports, programs


def test_passes_over_lazy_weights_give_the_graph_and_weights_of_the_whole_model(external, tmp_path):
    lazy = onnx_files.load_lazy(external / "model.onnx")
    weight_bytes = onnx_files.weight_bytes(lazy)
    assert lazy.ByteSize() < weight_bytes / 10  # the weights stayed in their file
    whole, whole_reports, whole_programs = _rewrite(onnx_files.load(external / "model.onnx"))
    rewritten, reports, programs = _rewrite(lazy)
    assert reports == whole_reports and all(r["rewrites"] for r in reports)
    assert [p.model.SerializeToString() for p in programs] == [p.model.SerializeToString() for p in whole_programs]
    files = onnx_files.save(rewritten, tmp_path / "model.onnx")
    assert [f.name for f in files] == ["model.onnx", "model.onnx.data"]
    saved = onnx_files.load(tmp_path / "model.onnx")
    assert [n.SerializeToString() for n in saved.graph.node] == [n.SerializeToString() for n in whole.graph.node]
    expected = {t.name: onnx.numpy_helper.to_array(t) for t in whole.graph.initializer}
    got = {t.name: onnx.numpy_helper.to_array(t) for t in saved.graph.initializer}
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value), name
    # The saved pair runs as it is (relative location beside the graph); same graph and weights, same outputs.
    onnx_files.save(whole, tmp_path / "whole.onnx")
    feed = as_numpy(unet_inputs(tiny_unet(), RESOLUTION))
    host = onnx_runtime.run(onnx_runtime.session(programs[0].model), {"timestep": feed.pop("timestep")})
    feed.update(host)
    out = onnx_runtime.run(onnx_runtime.session(tmp_path / "model.onnx"), feed)
    assert out.keys() == {"out_sample"}
    # Same graph and bit-identical weights (asserted above), loaded by two paths (external file vs inline):
    # kernels may round a few ULPs apart, as for any differently loaded tensors (tests/conftest.py).
    np.testing.assert_allclose(out["out_sample"],
                               onnx_runtime.run(onnx_runtime.session(tmp_path / "whole.onnx"), feed)["out_sample"],
                               rtol=SAME_WEIGHTS_RTOL, atol=SAME_WEIGHTS_ATOL)


def test_values_reads_one_weight_and_leaves_the_model_as_it_was(external):
    lazy = onnx_files.load_lazy(external / "model.onnx")
    whole = {t.name: t for t in onnx_files.load(external / "model.onnx").graph.initializer}
    tensor = max(lazy.graph.initializer, key=lambda t: int(external_weights.place(t)[2] or 0)
                 if t.data_location == onnx.TensorProto.EXTERNAL else 0)
    before = tensor.SerializeToString()
    np.testing.assert_array_equal(external_weights.values(tensor), onnx.numpy_helper.to_array(whole[tensor.name]))
    assert tensor.SerializeToString() == before and not tensor.raw_data


def test_a_missing_or_short_weights_file_is_named(external, tmp_path):
    (tmp_path / "model.onnx").write_bytes((external / "model.onnx").read_bytes())
    with pytest.raises(UserError, match=r"model\.onnx: weight .* is in .*model\.onnx\.data, which is missing"):
        onnx_files.load_lazy(tmp_path / "model.onnx")
    (tmp_path / "model.onnx.data").write_bytes((external / "model.onnx.data").read_bytes()[:1000])
    with pytest.raises(UserError, match=r"model\.onnx\.data, which is only 1000 bytes long"):
        onnx_files.load_lazy(tmp_path / "model.onnx")


def test_saving_over_the_weights_being_read_is_refused(external, tmp_path):
    for name in ("model.onnx", "model.onnx.data"):
        (tmp_path / name).write_bytes((external / name).read_bytes())
    lazy = onnx_files.load_lazy(tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="weights are read from this file"):
        onnx_files.save(lazy, tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx.data").read_bytes() == (external / "model.onnx.data").read_bytes()


def test_weights_at_a_relative_place_are_refused_with_the_way_out(external, tmp_path):
    unanchored = onnx_files.load(external / "model.onnx", with_weights=False)  # locations left relative
    with pytest.raises(ValueError, match="load the model with converter.common.onnx_files.load_lazy"):
        onnx_files.save(unanchored, tmp_path / "model.onnx")
