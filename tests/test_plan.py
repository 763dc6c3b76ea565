"""The plan settles what a request leaves open, each choice with its reason, from the request and the
graph's facts alone: no toolkit, no model run (converter/builds/plan.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from converter.builds import plan
from converter.builds.build_dir import StageResult
from converter.builds.request import BuildRequest, Checks, Gates, HybridSettings
from converter.builds.stages.export import Exported
from converter.builds.stages.passes import Rewritten
from converter.common.errors import UserError
from converter.models.model_source import ModelSource
from converter.models.unet_interface import GRAPH, UNET
from targets import get_chip

GiB = 2**30


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory) -> Path:
    """A real graph whose per-layer dumps the plan estimates: 1x4x8x8 through two 3x3 convs."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4, 3, 3], [0.1] * 144)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["y", "w"], ["z"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 8])], [weight])
    path = tmp_path_factory.mktemp("plan") / "model.onnx"
    onnx.save(helper.make_model(graph), path)
    return path


def _record(path: Path) -> StageResult:
    return StageResult("stage", path.parent, "key", {}, 0.0, False)


def _request(tmp_path: Path, graph_file: Path, chip: str = "rk3588", **fields) -> BuildRequest:
    source = ModelSource(str(graph_file), "onnx", graph_file)
    return BuildRequest(source=source, chip=get_chip(chip), out=tmp_path / "out", **fields)


def _exported(graph_file: Path, w8a16_layers: int = 0) -> Exported:
    return Exported(_record(graph_file), graph_file, UNET, 64, {}, w8a16_layers, "float32", None)


def _rewritten(graph_file: Path, onnx_bytes: int) -> Rewritten:
    return Rewritten(_record(graph_file), graph_file, onnx_bytes, [], [], {}, ["z"])


def _settle(req: BuildRequest, graph_file: Path, onnx_bytes: int = 2**20, graph: str = UNET,
            w8a16_layers: int = 0) -> plan.BuildPlan:
    evaluation = plan.check(req)
    chosen = plan.dtype(req, _exported(graph_file, w8a16_layers))
    names = plan.pass_names(req, chosen[0])
    return plan.settle(req, evaluation, chosen, names, graph, _rewritten(graph_file, onnx_bytes))


def test_dtype_auto_keeps_the_models_precision_and_says_why(tmp_path, graph_file):
    req = _request(tmp_path, graph_file, dtype="auto")
    assert plan.dtype(req, _exported(graph_file)) == ("float16", "a float model: float16 keeps its precision")
    assert plan.dtype(req, _exported(graph_file, w8a16_layers=3))[0] == "float16"  # rk3588 builds no w8a16
    on_rk3562 = _request(tmp_path, graph_file, "rk3562", dtype="auto")
    assert plan.dtype(on_rk3562, _exported(graph_file, w8a16_layers=3)) == (
        "w8a16", "a W8A16 checkpoint: rk3562 builds w8a16")
    asked = _request(tmp_path, graph_file, dtype="w8a8")
    assert plan.dtype(asked, _exported(graph_file, w8a16_layers=3)) == ("w8a8", None)


def test_parts_auto_cuts_by_weight_unless_the_layer_report_needs_the_model_whole(tmp_path, graph_file):
    auto = _request(tmp_path, graph_file, parts=None, checks=Checks(layer_report="off"))
    small = _settle(auto, graph_file, onnx_bytes=GiB)
    assert (small.parts, small.artifacts) == (1, [tmp_path / "out" / auto.artifact.name])
    float_whole = _settle(auto, graph_file, onnx_bytes=int(3.3 * GiB))  # SD 1.5's UNet in float32
    assert float_whole.parts == 2 and float_whole.parts_choice.startswith("3.3 GiB of weights, at most 2 GiB")
    assert [a.name for a in float_whole.artifacts] == [auto.artifact.with_suffix(f".part{i}.rknn").name
                                                       for i in (1, 2)]
    quantized = _settle(replace(auto, dtype="w8a8"), graph_file, onnx_bytes=int(3.3 * GiB))
    assert quantized.parts == 3 and "per quantized toolkit build" in quantized.parts_choice
    layered = _settle(replace(auto, checks=Checks(layer_report="on")), graph_file, onnx_bytes=int(3.3 * GiB))
    assert (layered.parts, layered.parts_choice) == (1, "the per-layer report needs the model whole")
    asked = _settle(replace(auto, parts=4), graph_file, onnx_bytes=GiB)
    assert (asked.parts, asked.parts_choice) == (4, None)


def test_the_layer_report_auto_follows_the_dumps_size_and_the_parts(tmp_path, graph_file, monkeypatch):
    req = _request(tmp_path, graph_file)
    assert (_settle(req, graph_file).layer_dumps, _settle(req, graph_file).layers_skipped) == (True, None)
    in_parts = _settle(replace(req, parts=2), graph_file)
    assert not in_parts.layer_dumps and in_parts.layers_skipped.endswith("not --parts")
    # the two convs' float outputs: 2 x 256 values, each dumped as text
    monkeypatch.setattr(plan, "AUTO_LAYER_DUMP_LIMIT", 256)
    too_big = _settle(req, graph_file)
    assert not too_big.layer_dumps and too_big.layers_skipped.startswith("per-layer dumps would take")


def test_quant_algorithm_auto_picks_mmse_only_for_a_small_build_without_the_search(tmp_path, graph_file):
    req = _request(tmp_path, graph_file, dtype="w8a8", quant_algorithm="auto")
    searched = _settle(req, graph_file)
    assert "quantized_algorithm" not in searched.toolkit.options
    assert searched.algorithm_choice.startswith("normal: the float16 search's tries reuse normal's step1")
    plain = replace(req, hybrid=HybridSettings(enabled=False))
    small = _settle(plain, graph_file, onnx_bytes=2**27)
    assert small.toolkit.options["quantized_algorithm"] == "mmse" and small.algorithm_choice.startswith("mmse")
    large = _settle(plain, graph_file, onnx_bytes=2**29)
    assert "quantized_algorithm" not in large.toolkit.options and "GiB of weights" in large.algorithm_choice
    float16 = _settle(_request(tmp_path, graph_file, dtype="auto", quant_algorithm="auto"), graph_file)
    assert (float16.dtype, float16.algorithm_choice) == ("float16", None)


def test_a_quantized_build_records_its_calibration_and_checks_on_trajectories(tmp_path, graph_file):
    quantized = _settle(_request(tmp_path, graph_file, dtype="w8a8"), graph_file)
    assert quantized.quantized and quantized.calibration is not None and quantized.check_inputs == "trajectories"
    with_toolkit_hybrid = _settle(_request(tmp_path, graph_file, dtype="w8a8", hybrid=HybridSettings(toolkit_cos=0.99)),
                                  graph_file)
    assert with_toolkit_hybrid.toolkit.options["auto_hybrid_cos_thresh"] == 0.99
    assert with_toolkit_hybrid.toolkit.auto_hybrid
    plain = _settle(_request(tmp_path, graph_file), graph_file)
    assert not plain.quantized and plain.calibration is None and plain.check_inputs == "gaussian"


@pytest.mark.parametrize("fields, message", [
    ({"dtype": "w8a16"}, "--dtype w8a16 for rk3588: "),
    ({"dtype": "float16", "quant_algorithm": "mmse"}, "--quant-algorithm mmse is about int8: --dtype float16"),
    ({"parts": 2, "checks": Checks(layer_report="on")}, "--parts 2: the per-layer report"),
    ({"parts": 2, "gates": Gates(min_layer_cos=0.99)}, "--parts 2: the per-layer report"),
    ({"checks": Checks(image_check="on")}, "--image-check on: "),
    ({"gates": Gates(min_prompt_accuracy=0.5)}, "--min-prompt-accuracy: "),
])
def test_what_can_be_refused_is_refused_before_anything_is_written(tmp_path, graph_file, fields, message):
    with pytest.raises(UserError, match=f"^{message}"):
        plan.check(_request(tmp_path, graph_file, **fields))
    assert not (tmp_path / "out").exists()


def test_a_graph_other_than_a_unet_is_built_float16_on_gaussian_inputs(tmp_path, graph_file):
    with pytest.raises(UserError, match=r"^--dtype w8a8: .* is not a UNet"):
        _settle(_request(tmp_path, graph_file, dtype="w8a8"), graph_file, graph=GRAPH)
    with pytest.raises(UserError, match=r"^--quant-algorithm mmse is about int8, and --dtype auto chose float16"):
        _settle(_request(tmp_path, graph_file, dtype="auto", quant_algorithm="mmse"), graph_file)
    plain = _settle(_request(tmp_path, graph_file), graph_file, graph=GRAPH)
    assert (plain.graph, plain.check_inputs, plain.evaluation) == (GRAPH, "gaussian", None)
