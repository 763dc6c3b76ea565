"""`rkconvert diagnose` on real toolkit failures: classified, reduced, matched to their fix."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import error_lines, rkconvert, tiny_unet

from converter.diagnose import locate, probe
from converter.diagnose.remedy import remedied
from converter.toolkit import known_failures
from converter.toolkit.child import Ending
from converter.toolkit.failure import Failure, classify
from converter.toolkit.job import ToolkitSettings

# The flip crash reduces in ~25 toolkit builds, ~1 min on 2 cores.
DIAGNOSE_HANG_GUARD_SECONDS = 900
# Either pass avoids the time projection's flip crash (host_time_projection moves it to the host,
# drop_unit_slice_steps writes its Slices the way the toolkit builds them).
WITHOUT_FIXES = ("--skip-pass", "host_time_projection", "--skip-pass", "drop_unit_slice_steps")


@pytest.fixture(scope="module")
def flip_crash(tmp_path_factory):
    """A tiny UNet built without host_time_projection crashes the toolkit; the diagnose command the failed
    build names, run as named: (work, diagnose's process, build folder, diagnosis)."""
    work = tmp_path_factory.mktemp("diagnose")
    tiny_unet().save_pretrained(work / "tiny-unet")
    out = work / "flip"
    failed = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", *WITHOUT_FIXES, "--out", str(out),
                       "--rebuild", cwd=work)
    assert failed.returncode == 1 and "died with SIGSEGV" in error_lines(failed)[0]
    (hint,) = [line for line in failed.stderr.splitlines() if line.startswith("find out why: ")]
    assert shlex.split(hint.removeprefix("find out why: ")) == [
        "rkconvert", "diagnose", "--model", "tiny-unet", "--target", "rk3588", "--out", str(out), *WITHOUT_FIXES]
    result = rkconvert(*shlex.split(hint)[4:], cwd=work, timeout=DIAGNOSE_HANG_GUARD_SECONDS)
    assert "(reused)" in result.stderr  # the failed build's export and passes
    return work, result, out, json.loads((out / "diagnosis" / "diagnosis.json").read_text())


def test_time_projection_crash_is_reduced_to_its_three_nodes_and_matched(flip_crash):
    _, result, out, diagnosis = flip_crash
    assert result.returncode == 1, result.stderr
    assert (diagnosis["failure"]["kind"], diagnosis["failure"]["phase"], diagnosis["failure"]["detail"]) == \
        ("crash", "build()", "SIGSEGV")
    reduction = diagnosis["reduction"]
    assert reduction["nodes_before"] > 500 and reduction["nodes_after"] <= 5 and reduction["reproduced"]
    assert reduction["candidate_errors"] == 0 and reduction["stopped"] is None
    repro = onnx.load(str(out / "diagnosis" / "repro.onnx"))
    assert sorted(n.op_type for n in repro.graph.node) == ["Concat", "Slice", "Slice"]
    assert "fuse_slice_slice_concat_to_conv" in diagnosis["repro"]["rules"]
    assert diagnosis["known"]["id"] == "flip-sin-cos-slice-concat"
    assert diagnosis["known"]["remedy"] == {"pass": "host_time_projection"}
    assert "fix: graph pass host_time_projection" in result.stdout
    assert "build with the fix: rkconvert build --model tiny-unet --target rk3588 --out " in result.stdout
    assert not list(out.glob(".diagnosis.tmp-*"))
    report = json.loads((out / "report.json").read_text())  # the failed build's, now pointing here
    assert report["status"] == "failed" and report["diagnosis"]["known"] == "flip-sin-cos-slice-concat"
    assert 'href="diagnosis/diagnosis.json"' in (out / "report.html").read_text()


def test_apply_builds_with_the_fix(flip_crash, tmp_path):
    work, _, out, _ = flip_crash
    fixed = tmp_path / "flip"
    shutil.copytree(out, fixed)
    result = rkconvert("diagnose", "--target", "rk3588", "--model", "tiny-unet", *WITHOUT_FIXES,
                       "--out", str(fixed), "--apply", cwd=work, timeout=DIAGNOSE_HANG_GUARD_SECONDS)
    assert result.returncode == 0, result.stderr
    report = json.loads((fixed / "report.json").read_text())
    assert report["status"] == "ok" and report["output_psnr_db"] >= 60
    assert [p["pass"] for p in report["passes"]][0] == "host_time_projection"
    assert (fixed / report["artifact"]).stat().st_size > 0


def test_repro_script_reproduces_with_the_toolkit_alone(flip_crash):
    _, _, out, _ = flip_crash
    run = subprocess.run([sys.executable, "repro.py"], cwd=out / "diagnosis", capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == -11, run.stdout[-2000:]


def test_a_failure_no_entry_matches_is_unknown_and_keeps_its_repro(flip_crash, tmp_path):
    work, _, out, _ = flip_crash
    catalogue = tmp_path / "others.toml"
    entries = known_failures.CATALOGUE.read_text().split("[[failure]]")
    catalogue.write_text("[[failure]]".join(e for e in entries if "flip-sin-cos" not in e))
    result = rkconvert("diagnose", "--target", "rk3588", "--model", "tiny-unet", *WITHOUT_FIXES,
                       "--out", str(out), "--known-failures", str(catalogue), cwd=work,
                       timeout=DIAGNOSE_HANG_GUARD_SECONDS)
    assert result.returncode == 1, result.stderr
    assert "reduce" in result.stderr and "(reused)" in result.stderr  # the reduction is a stage: not redone
    diagnosis = json.loads((out / "diagnosis" / "diagnosis.json").read_text())
    assert diagnosis["known"] is None
    assert "unknown: no entry of" in result.stdout
    assert len(onnx.load(str(out / "diagnosis" / "repro.onnx")).graph.node) <= 5


def test_rk3588_w8a16_is_a_refusal_with_the_dtypes_it_builds(flip_crash):
    work, _, _, _ = flip_crash
    out = work / "w8a16"
    result = rkconvert("diagnose", "--target", "rk3588", "--model", "tiny-unet", "--dtype", "w8a16", "--out", str(out),
                       "--samples", "4", "--trajectories", "1", cwd=work, timeout=DIAGNOSE_HANG_GUARD_SECONDS)
    assert result.returncode == 1, result.stderr
    diagnosis = json.loads((out / "diagnosis" / "diagnosis.json").read_text())
    assert diagnosis["failure"]["kind"] == "refusal" and diagnosis["failure"]["phase"] == "config()"
    assert "w8a16" in diagnosis["failure"]["detail"]
    assert "skipped" in diagnosis["reduction"]
    assert diagnosis["known"]["remedy"] == {"dtypes": ["float16", "w8a8"]}
    assert "fix: build as float16 or w8a8" in result.stdout


@pytest.fixture(scope="module")
def fused_qkv(flip_crash):
    """The tiny UNet simplified by onnxsim (q/k/v fused) and not split again, diagnosed: (process, build folder)."""
    work, _, _, _ = flip_crash
    out = work / "qkv"
    result = rkconvert("diagnose", "--target", "rk3588", "--model", "tiny-unet", "--enable-pass", "simplify",
                       "--skip-pass", "split_fused_qkv_projection", "--out", str(out), cwd=work,
                       timeout=DIAGNOSE_HANG_GUARD_SECONDS)
    return result, out


def test_fused_qkv_accuracy_loss_is_located_at_the_first_fused_matmul_and_matched(fused_qkv):
    result, out = fused_qkv
    assert result.returncode == 1, result.stderr
    diagnosis = json.loads((out / "diagnosis" / "diagnosis.json").read_text())
    assert diagnosis["failure"]["kind"] == "accuracy"
    departed = diagnosis["departure"]
    graph = onnx.load(str(out / "stages" / "passes" / "model.onnx"), load_external_data=False).graph
    consumers = {i: n.op_type for n in graph.node for i in n.input}
    fused = [n for n in graph.node if n.op_type == "MatMul" and consumers.get(n.output[0]) == "Split"]
    assert fused and departed["onnx_tensor"] == fused[0].output[0]  # the first of onnxsim's fused q/k/v
    assert departed["cause"] == "rewrite" and departed["golden_cosine"] < 0.5
    reduction = diagnosis["reduction"]
    assert reduction["nodes_before"] > 300 and reduction["nodes_after"] <= 30 and reduction["reproduced"]
    ops = diagnosis["repro"]["ops"]
    assert ops["Split"] == 1 and ops["Softmax"] == 1 and ops["MatMul"] >= 3
    assert diagnosis["repro"]["failure"]["kind"] == "accuracy"
    assert diagnosis["known"]["id"] == "fused-qkv-attention"
    assert "fix: graph pass split_fused_qkv_projection" in result.stdout
    run = subprocess.run([sys.executable, "repro.py"], cwd=out / "diagnosis", capture_output=True, text=True,
                         timeout=300)
    psnr = float(re.search(r"output PSNR against onnxruntime: (-?[\d.]+) dB", run.stdout).group(1))
    assert psnr < 40


def test_a_livelock_is_ended_by_the_budget_and_classified(fused_qkv, tmp_path):
    """The toolkit's OpFusing goes round forever on a UNet quantized with QDQ activations (rkconvert refuses
    such an ONNX as input: the probe gets it directly)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    _, out = fused_qkv
    source = out / "stages" / "passes" / "model.onnx"
    feed = {name: np.load(out / "stages" / "reference" / path)
            for name, path in json.loads((out / "stages" / "reference" / "stage.json").read_text())
            ["meta"]["samples"][0].items()}

    class OneFeed(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([feed])

        def get_next(self):
            return next(self.feeds, None)

    qdq = tmp_path / "qdq.onnx"
    quantize_static(str(source), str(qdq), OneFeed(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    np.savez(tmp_path / "feed.npz", **feed)
    budget = 24.0  # the loop is under way by then (it starts within seconds of build(); twice that on a loaded machine)
    failure = probe.run(qdq, probe.Probe(ToolkitSettings("rk3588"), budget, str(qdq), [str(tmp_path / "feed.npz")]),
                        tmp_path / "run")
    assert failure.kind == "no_progress" and failure.phase == "build()"
    assert budget <= failure.seconds < 3 * budget
    assert failure.last_rule in ("bypass_two_reshape", "unsqueeze_to_4d_transpose", "swap_reshape_transpose_v2")


def test_departure_is_the_first_layer_the_gate_cannot_take():
    def row(index, added, golden=1.0, mapping="matched"):
        return {"index": index, "op": "Conv", "mapping": mapping, "added_noise_db": added, "golden_cosine": golden,
                "cosine": 0.9}

    rows = [row(0, -70), row(1, -30, mapping="unmapped"), row(2, -50), row(3, -35), row(4, -20)]
    assert locate.departure(rows, 40)["index"] == 3
    assert locate.cause(locate.departure(rows, 40)) == "precision"
    assert locate.departure(rows, 60)["index"] == 2
    rewritten = rows[:2] + [row(2, -50, golden=0.2)] + rows[3:]
    assert locate.cause(locate.departure(rewritten, 40)) == "rewrite" and locate.departure(rewritten, 40)["index"] == 2
    assert locate.departure(rows, 10)["index"] == 4  # none alone fails the gate: the noisiest


def test_an_estimated_departure_is_the_first_tensor_in_order_the_gate_cannot_take_alone(tmp_path):
    from onnx import TensorProto, helper

    from converter.builds.build_dir import StageResult
    from converter.builds.stages.sensitivity import Sensitivities
    from converter.common.onnx_graph import Graph
    from converter.diagnose import estimated_departure

    chain = [helper.make_node("Relu", [a], [b], name=f"n{b}") for a, b in zip("xabc", "abcy")]
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1])  # noqa: E731
    onnx.save(helper.make_model(helper.make_graph(chain, "chain", [value("x")], [value("y")])), tmp_path / "m.onnx")
    graph = Graph.load(tmp_path / "m.onnx")

    def measured(alone: dict[str, float], emulated: float = 40.0) -> Sensitivities:
        ranking = [{"tensor": t, "names": [f"{t}_q"], "alone_db": db}
                   for t, db in sorted(alone.items(), key=lambda i: i[1])]
        return Sensitivities(StageResult("sensitivity", tmp_path, "", {}, 0.0, False), ranking, {0: emulated}, 0, None)

    # On the calibration inputs, each alone: c 30 dB, b 38, a 45 (costliest first: c, b, a; in the graph: a, b, c).
    # Their shares of the summed noise: 84 %, 13 %, 2.7 %; of the emulated 40 dB on the check inputs, each alone
    # costs 40.8, 48.8 and 55.8 dB.
    costs = {"c": 30.0, "a": 45.0, "b": 38.0}
    found = estimated_departure.departure(measured(costs), graph, 50, 39.5)
    assert (found["onnx_tensor"], found["index"], found["failing_alone"]) == ("b", 1, 2)
    assert found["onnx_nodes"] == ["nb"] and found["layer"] == "b_q" and found["cause"] == "precision"
    assert abs(found["alone_db"] - 48.76) < 0.01 and abs(found["share"] - 0.133) < 0.001
    assert estimated_departure.departure(measured(costs), graph, 42, 39.5)["onnx_tensor"] == "c"
    assert estimated_departure.departure(measured(costs), graph, 60, 39.5)["onnx_tensor"] == "a"
    none_alone = estimated_departure.departure(measured(costs), graph, 40.5, 39.5)
    assert none_alone["onnx_tensor"] == "c" and none_alone["failing_alone"] == 0  # the costliest
    # the simulator far under what every activation's int8 explains: not precision
    assert estimated_departure.departure(measured(costs), graph, 42, 25.0)["cause"] == "rewrite"
    assert estimated_departure.departure(measured({}), graph, 42, 25.0) is None


def test_a_remedy_changes_only_the_options_it_needs(tmp_path):
    from dataclasses import replace

    from converter.builds.request import BuildRequest, PassChoice
    from converter.models.model_source import resolve
    from targets import get_chip

    base = BuildRequest(resolve("sd15:mini"), get_chip("rk3588"), tmp_path, dtype="auto",
                        passes=PassChoice(enable=("simplify",), skip=("host_time_projection", "tile_attention")))
    assert remedied(base, {"pass": "host_time_projection"}).passes.skip == ("tile_attention",)
    assert remedied(base, {"pass": "simplify"}).passes.enable == ("simplify",)
    assert remedied(replace(base, passes=replace(base.passes, enable=())), {"pass": "simplify"}).passes.enable == \
        ("simplify",)
    explicit = replace(base, passes=replace(base.passes, explicit="simplify,group_norm_as_conv"))
    assert remedied(explicit, {"pass": "host_time_projection"}).passes.explicit == \
        "host_time_projection,simplify,group_norm_as_conv"
    assert remedied(explicit, {"pass": "split_fused_qkv_projection"}).passes.explicit == \
        "simplify,split_fused_qkv_projection,group_norm_as_conv"
    assert remedied(base, {"dtypes": ["float16", "w8a8"]}) == replace(base, dtype="float16")


def _ending(tmp_path, log: str, **fields) -> Ending:
    (tmp_path / "log").write_text(log)
    return Ending(**{"signal": None, "exit_code": None, "error": None, "phase": "build()", "seconds": 3.0,
                     "out_of_time": False, "log": tmp_path / "log", **fields})


def test_classes(tmp_path):
    rule = "D     fuse_x: remove node = ['a'], add node = ['b']\n"
    assert classify(_ending(tmp_path, rule, signal="SIGSEGV")).kind == "crash"
    assert classify(_ending(tmp_path, rule, signal="SIGSEGV")).last_rule == "fuse_x"
    assert classify(_ending(tmp_path, "corrupted size vs. prev_size\n", signal="SIGABRT")).kind == "abort"
    assert classify(_ending(tmp_path, "", signal="SIGKILL", out_of_time=True)).kind == "no_progress"
    assert classify(_ending(tmp_path, "", signal="SIGKILL")).kind == "out_of_memory"
    assert classify(_ending(tmp_path, "", exit_code=1, error="ValueError: bad", phase="config()")).kind == "refusal"
    assert classify(_ending(tmp_path, "", exit_code=1, error="ValueError: bad")).kind == "error"
    # Heap corruption ends either way from run to run: one failure for the reduction.
    crash, abort = Failure("crash", "build()", "SIGSEGV", None, 1), Failure("abort", "build()", "SIGABRT", None, 1)
    assert crash.same_way(abort) and not crash.same_way(Failure("crash", "export_rknn()", "SIGSEGV", None, 1))
    err = Failure("error", "build()", "ValueError: node 'a/b' has 3 inputs", None, 1)
    assert err.same_way(Failure("error", "build()", "ValueError: node 'c' has 4 inputs", None, 1))
    assert not err.same_way(Failure("error", "build()", "KeyError: 'x'", None, 1))


def test_catalogue_remedies_name_real_passes_and_dtypes():
    from graph_passes import CATALOGUE
    from targets import get_chip

    for entry in known_failures.load():
        if "pass" in entry.remedy:
            assert entry.remedy["pass"] in CATALOGUE, entry.id
            assert all(entry.remedy["pass"] in get_chip(t).passes for t in entry.targets), entry.id
        else:
            assert all(d in get_chip(t).dtypes for t in entry.targets for d in entry.remedy["dtypes"]), entry.id


def test_rk3562s_reduced_w8a16_conv_is_matched_to_its_pass():
    """As `diagnose --target rk3562 --dtype w8a16 --skip-pass pad_conv_channels` reduced the tiny UNet
    (842 nodes to conv_in, 241 toolkit builds, 8.6 min: too long for the suite)."""
    known = known_failures.load()
    seen = known_failures.Seen("abort", "build()", "SIGABRT", "rk3562", "2.5.0", ops=["Conv"])
    assert known_failures.match(seen, known).remedy == {"pass": "pad_conv_channels"}
    assert known_failures.match(known_failures.Seen("crash", "build()", "SIGSEGV", "rk3588", "2.5.0", ops=["Conv"]),
                                known) is None


def test_a_malformed_catalogue_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[failure]]\nid = "x"\ntitle = "t"\nkind = "crash"\nremedy = { pass = "a", dtypes = ["b"] }\n')
    result = rkconvert("diagnose", "--target", "rk3588", "--model", "sd15:mini", "--known-failures", str(bad),
                       cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"rkconvert: error: {bad}: failure 'x' needs id, title, kind and "
                                                  "one remedy (pass, dtypes, advice)"]
    assert not (tmp_path / "build").exists()
