"""`rkconvert lint`: findings from the target's facts and the passes' patterns, checked against a real build."""

from __future__ import annotations

from onnx import TensorProto, helper

from converter.builds.pass_selection import select
from converter.common import onnx_files
from converter.lint.check import findings, lint
from targets import get_chip
from tests.conftest import error_lines, rkconvert

RK3588 = get_chip("rk3588")


def test_tiny_unet_lints_clean_with_the_default_passes(tiny_build):
    work, _, out, report = tiny_build
    result = rkconvert("lint", "--target", "rk3588", "--model", "tiny-unet", cwd=work)
    assert result.returncode == 0, result.stderr
    for node in ("/time_proj/Sin", "/time_proj/Cos", "/time_proj/Concat_1"):
        assert node in result.stdout
    assert "fixed by host_time_projection" in result.stdout
    assert "3 finding(s) in the exported graph, 0 left after the passes." in result.stdout
    assert "(reused)" in result.stderr  # the export stage of the earlier build


def test_lint_agrees_with_the_placement_of_a_real_build(tiny_build):
    _, _, out, report = tiny_build
    exported = onnx_files.load(out / "stages" / "export" / "model.onnx")
    predicted_cpu = [f for f in lint(exported, RK3588, select(RK3588)).remaining if f.kind == "cpu"]
    assert report["cpu_ops"] == len(predicted_cpu) == 0
    by_layer = {r["layer"]: r for r in report["placement"]}
    assert by_layer["/conv_in/Conv"]["device"] == "NPU"
    assert {r["device"] for r in report["placement"] if r["op"] == "InputOperator"} == {"CPU"}
    assert len(report["placement"]) > 100


def test_rk3562_names_the_convs_its_w8a16_compiler_dies_on(tiny_build):
    _, _, out, _ = tiny_build
    exported = onnx_files.load(out / "stages" / "export" / "model.onnx")
    rk3562 = get_chip("rk3562")
    narrow = [f for f in findings(exported, rk3562) if f.fix == "pad_conv_channels"]
    assert sorted(f.node for f in narrow) == ["/conv_in/Conv", "/conv_out/Conv"]
    assert {f.kind for f in narrow} == {"crash"} and "w8a16" in narrow[0].problem
    assert not any(f.fix == "pad_conv_channels" for f in findings(exported, RK3588))  # not rk3588's pass
    assert not any(f.fix == "pad_conv_channels" for f in lint(exported, rk3562, select(rk3562)).remaining)


def test_without_the_fix_lint_fails_and_names_it(tiny_build):
    work, _, _, _ = tiny_build
    result = rkconvert("lint", "--target", "rk3588", "--model", "tiny-unet", "--skip-pass", "host_time_projection", cwd=work)
    assert result.returncode == 1
    assert "host_time_projection fixes it" in result.stdout
    assert "3 left after the passes" in result.stdout
    bad = rkconvert("lint", "--target", "rk3588", "--model", "tiny-unet", "--passes", "nope", cwd=work)
    assert bad.returncode == 2 and error_lines(bad) == [
        "rkconvert: error: --passes nope: no such pass (known: host_time_projection, simplify, split_fused_qkv_projection, "
        "group_norm_as_conv, tile_attention, pad_conv_channels, pad_matmul_inner_dim, drop_unit_slice_steps, "
        "einsum_as_matmul, attention_key_as_gemm)"]


def test_operator_facts_skip_shape_arithmetic():
    v = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    nodes = [
        helper.make_node("GroupNormalization", ["x", "s", "b"], ["g"], num_groups=2, name="gn"),
        helper.make_node("Einsum", ["g", "g"], ["e"], equation="bchw,bchw->bchw", name="einsum"),
        helper.make_node("Shape", ["e"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["dim"], axis=0, name="gather_on_shape"),
        helper.make_node("Gather", ["e", "zero"], ["picked"], axis=1, name="gather_on_values"),
        helper.make_node("ReduceMean", ["picked"], ["y"], name="mean"),
    ]
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [4], [1] * 4), helper.make_tensor("b", TensorProto.FLOAT, [4], [0] * 4),
             helper.make_tensor("zero", TensorProto.INT64, [], [0])]
    model = helper.make_model(helper.make_graph(nodes, "g", [v("x", [1, 4, 2, 2])], [v("y", None)], inits),
                              opset_imports=[helper.make_opsetid("", 21)])
    found = {(f.node, f.kind, f.fix) for f in findings(model, RK3588)}
    assert found == {("gn", "rejected", None), ("einsum", "rejected", None),
                     ("gather_on_values", "cpu", None), ("mean", "cpu", None)}
    result = lint(model, RK3588, select(RK3588))
    assert len(result.remaining) == 4 and not result.fixed_by
