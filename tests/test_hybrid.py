"""w8a8 under the gate: the fewest costliest layers kept in float16 (hybrid quantization) that reach it,
the cost of each measured by quantizing it alone (stage sensitivity)."""

from __future__ import annotations

import json
from io import StringIO

import numpy as np
import pytest
import torch
from rich.console import Console

from converter.builds.finished import FinishedBuild
from converter.reports.report import print_summary
from tests.conftest import error_lines, rkconvert, tiny_unet

# (the search needs no per-layer report: off, it saves each plain build its dumps)
QUANTIZED = ("--dtype", "w8a8", "--samples", "6", "--trajectories", "2", "--check-samples", "2",
             "--layer-report", "off")
# Output channel 0 of this convolution scaled x1000 (weight and bias): its int8 range leaves the other 63
# channels a step or two each, and the GroupNorm after it spreads that error over its groups.
SENSITIVE = "/down_blocks.1/resnets.0/conv1/Conv_output_0"


def _fp16_layers(report: dict) -> int:
    return sum(r["dtype"] == "FLOAT16" and r["op"] not in ("InputOperator", "OutputOperator")
               for r in report["placement"])


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory):
    """A tiny UNet with one layer made sensitive on purpose, and its plain w8a8 build's report."""
    work = tmp_path_factory.mktemp("sensitive")
    unet = tiny_unet()
    with torch.no_grad():
        conv = unet.down_blocks[1].resnets[0].conv1
        conv.weight[0] *= 1000
        conv.bias[0] *= 1000
    unet.save_pretrained(work / "sensitive-unet")
    plain = _build(work, "--min-psnr", "0")
    assert plain.returncode == 0, plain.stderr
    return work, json.loads((work / "w8a8" / "report.json").read_text())


def _build(work, *args: str, out: str = "w8a8"):
    return rkconvert("build", "--target", "rk3588", "--model", "sensitive-unet", *QUANTIZED, *args, "--out", out,
                     cwd=work)


def test_the_layer_made_sensitive_ranks_first_and_the_search_starts_at_the_emulations_guess(sensitive):
    work, base = sensitive
    gate = base["output_psnr_db"] + 6
    result = _build(work, "--min-psnr", repr(gate))
    assert result.returncode == 0, result.stderr
    report = json.loads((work / "w8a8" / "report.json").read_text())
    ranked = report["sensitivity"]["costliest"]
    assert ranked[0]["tensor"] == SENSITIVE and ranked[0]["alone_db"] < ranked[len(ranked) // 2]["alone_db"] - 10
    assert report["sensitivity"]["unmatched"] < report["sensitivity"]["tensors"] // 10
    # The emulation of the plain build agrees with the simulator's (same check inputs, same metric).
    assert abs(report["sensitivity"]["emulated_psnr_db"]["0"] - base["output_psnr_db"]) < 2.0

    kept, guess = report["hybrid_kept"], report["hybrid_guess"]
    trials = {t["float16_layers"]: t["psnr_db"] for t in report["hybrid_trials"]}
    assert report["output_psnr_db"] >= gate and trials[kept] == report["output_psnr_db"]
    assert all(psnr < gate for k, psnr in trials.items() if k < kept), trials
    # one layer fewer was tried and fell short, or the emulation put it well under the gate
    assert kept - 1 <= report["hybrid_floor"] or trials[kept - 1] < gate
    assert min(trials) > report["hybrid_floor"] >= 0 and len(trials) <= 6, trials  # from the guess, not from 1
    assert SENSITIVE in report["float16_layers"]
    # the delivered try, as a rebuild makes it again: step2 from the plain build's step1
    assert [job.step1 for job in FinishedBuild.open(work / "w8a8").model().jobs] == [
        work.resolve() / "w8a8" / "stages" / "rknn" / "step1"]
    assert _fp16_layers(report) > _fp16_layers(base)
    assert "kept float16" in result.stdout and f"emulation's guess {guess}" in result.stdout
    compiled = [r for r in report["placement"] if r["op"] not in ("InputOperator", "OutputOperator")]
    share = report["cost"]["float16_share"]
    assert share["layers"] == round(_fp16_layers(report) / len(compiled), 4) and 0 < share["layers"] < 0.5
    assert 0 <= share["cycles"] <= 1 and base["cost"]["float16_share"]["layers"] < share["layers"]
    assert "float16 share" in result.stdout and f"{share['layers']:.0%} of the layers" in result.stdout
    assert "mostly float16" not in result.stdout
    mostly = {**report, "cost": {**report["cost"], "float16_share": {"layers": 0.73, "cycles": 0.61}}}
    shown = StringIO()
    print_summary(Console(file=shown, width=200), mostly, work / "w8a8" / "report.json")
    assert "73% of the layers, 61% of the estimated cycles; mostly float16, a w8a8 build in name" in shown.getvalue()



def test_a_gate_the_emulation_puts_past_the_float16_share_stops_before_any_trial(sensitive):
    work, base = sensitive
    failed = _build(work, "--min-psnr", repr(base["output_psnr_db"] + 6), "--hybrid-max-float16", "0.01")
    assert failed.returncode == 1
    line = error_lines(failed)[0]
    assert "the emulation (stage sensitivity) predicts reaching it needs about" in line
    assert "over --hybrid-max-float16 0.01" in line
    report = json.loads((work / "w8a8" / "report.json").read_text())
    assert report["hybrid_trials"] is None and report["sensitivity"]["costliest"][0]["tensor"] == SENSITIVE
    assert not list((work / "w8a8").glob("*.rknn"))

    unreachable = _build(work, "--min-psnr", "500")
    assert unreachable.returncode == 1
    count = report["sensitivity"]["tensors"]
    assert f"needs about {count} of {count} layers (100%) in float16" in error_lines(unreachable)[0]

    no_search = _build(work, "--min-psnr", repr(base["output_psnr_db"] + 6), "--no-hybrid")
    assert no_search.returncode == 1 and "under --min-psnr" in error_lines(no_search)[0]


def test_the_quant_algorithm_reaches_the_toolkit(sensitive):
    """--quant-algorithm mmse: the toolkit clips most ranges that normal (min/max) takes whole, in its own
    config (on this model 252 of its int8 tensors against normal's 8)."""
    work, base = sensitive

    def clipped(out: str) -> int:
        from ruamel.yaml import YAML

        config = YAML(typ="safe").load((work / out / "stages" / "rknn" / "step1" / "quantization.cfg").read_text())
        return sum(p["min"] != p["ori_min"] or p["max"] != p["ori_max"]
                   for p in config["quantize_parameters"].values() if p.get("dtype") == "int8")

    result = _build(work, "--min-psnr", "0", "--quant-algorithm", "mmse", out="mmse")
    assert result.returncode == 0, result.stderr
    report = json.loads((work / "mmse" / "report.json").read_text())
    assert report["toolkit_config"] == {"quantized_algorithm": "mmse"} and base["toolkit_config"] == {}
    assert "--quant-algorithm mmse" in report["command"]
    assert clipped("mmse") > 5 * max(clipped("w8a8"), 10)  # (normal leaves a few: the softmax's, ...)
    assert report["output_psnr_db"] != base["output_psnr_db"]
    # A rebuild (image check, generate, the search's tries) of an mmse build runs step1 itself (a normal
    # one starts from the plain build's step1: the first test).
    assert [job.step1 for job in FinishedBuild.open(work / "mmse").model().jobs] == [None]


def test_quant_algorithm_auto_chooses_by_the_measured_rule(sensitive):
    """auto: normal where the float16 search may run (its tries reuse normal's step1; the plain build here is
    the base build, reused), mmse for a small model built without the search."""
    work, base = sensitive
    searched = _build(work, "--min-psnr", "0", "--quant-algorithm", "auto", out="w8a8")
    assert searched.returncode == 0, searched.stderr
    report = json.loads((work / "w8a8" / "report.json").read_text())
    assert report["toolkit_config"] == {} and report["quant_algorithm_choice"].startswith("normal: the float16 search")
    lines = (searched.stdout + searched.stderr).splitlines()
    assert any(line.startswith("✓ rknn") and line.endswith("(reused)") for line in lines), lines
    plain = _build(work, "--min-psnr", "0", "--quant-algorithm", "auto", "--no-hybrid", out="auto-plain")
    assert plain.returncode == 0, plain.stderr
    report = json.loads((work / "auto-plain" / "report.json").read_text())
    assert report["toolkit_config"] == {"quantized_algorithm": "mmse"}
    assert report["quant_algorithm_choice"].startswith("mmse: a build without the search")


def test_the_toolkits_own_auto_hybrid_runs_as_a_baseline(sensitive):
    """--toolkit-auto-hybrid COS: build(auto_hybrid=True) moves layers to float16 by itself; no search, no
    sensitivity stage after it."""
    work, base = sensitive
    result = _build(work, "--min-psnr", "0", "--toolkit-auto-hybrid", "0.999", out="auto-hybrid")
    assert result.returncode == 0, result.stderr
    report = json.loads((work / "auto-hybrid" / "report.json").read_text())
    assert report["toolkit_config"] == {"auto_hybrid_cos_thresh": 0.999}
    assert report["sensitivity"] is None and report["hybrid_trials"] is None and report["float16_layers"] == []
    assert _fp16_layers(report) > _fp16_layers(base) == 0
    assert report["output_psnr_db"] > base["output_psnr_db"]
    # What a rebuilt simulator (image check, generate, release --simulate) builds: auto_hybrid again, from
    # no step1 (it keeps none).
    jobs = FinishedBuild.open(work / "auto-hybrid").model().jobs
    assert [(job.auto_hybrid, job.step1) for job in jobs] == [(True, None)]


def test_the_gradient_ranking_is_the_ranking_of_each_tensor_quantized_alone(sensitive):
    """Stage sensitivity ranks from gradients (first order, every tensor in a few backward passes); the
    emulation quantizing each tensor alone, an inference each, ranks alike: the sensitive layer first, rank
    correlation over 0.9 (measured 0.998 on the demo). The torch evaluation it differentiates computes
    what ONNX Runtime computes (float32 both, summed in another order: 1e-4 of the output's range)."""
    from scipy.stats import spearmanr

    from calib_data.dataset_writer import read_samples
    from converter.builds.build_dir import finished_stage
    from converter.builds.stages.passes import Rewritten
    from converter.builds.stages.rknn import Converted
    from converter.common import onnx_runtime
    from converter.common.onnx_graph import Graph
    from converter.common.onnx_torch import TorchGraph
    from converter.mixed_precision.sensitivity import emulate
    from converter.toolkit import quant_config

    work, _ = sensitive
    out = work / "w8a8"
    passes, plain = Rewritten.read(finished_stage(out, "passes")), Converted.read(finished_stage(out, "rknn"))
    graph = Graph.load(passes.onnx)
    quantized = [q for cfg in plain.quant_configs for q in quant_config.read(cfg, graph)]
    calibration, _ = read_samples(finished_stage(out, "calib").path)
    emulation = emulate(passes.onnx, quantized, calibration, 2, work / "scratch")
    alone = [s.tensor for s in emulation.ranking()]
    ranked = json.loads((out / "stages" / "sensitivity" / "ranking.json").read_text())["ranking"]
    by_gradient = {row["tensor"]: i for i, row in enumerate(ranked)}
    assert alone[0] == SENSITIVE == ranked[0]["tensor"] and set(alone) == set(by_gradient)
    assert spearmanr(range(len(alone)), [by_gradient[t] for t in alone]).correlation > 0.9

    feed = calibration[0]
    expected = onnx_runtime.run(onnx_runtime.session(passes.onnx), feed)
    inputs = {k: torch.from_numpy(v) for k, v in feed.items()}
    with torch.no_grad():
        got, kept = TorchGraph.load(passes.onnx).run(inputs, {SENSITIVE})
    for value, (name, reference) in zip(got, expected.items()):
        assert abs(value.numpy() - reference).max() < 1e-4 * np.ptp(reference), name
    # streamed (each tensor let go after its last reader, as the proxy's full-resolution pass runs): the same
    seen = {}
    streamed = TorchGraph.load(passes.onnx).stream(inputs, {SENSITIVE}, lambda name, value: seen.update({name: value}))
    assert all(torch.equal(a, b) for a, b in zip(streamed, got)) and torch.equal(seen[SENSITIVE], kept[SENSITIVE])


def test_layers_ranked_at_a_smaller_resolution_carry_to_the_build(sensitive):
    """--hybrid-rank-resolution under the build's: the model exported again at half the resolution (stages
    proxy-export, proxy-passes), ranked with the build's int8 scales on inputs taken every 2nd latent pixel;
    the layer made sensitive still ranks first, the build's tensors are matched, and the search ends at the
    gate."""
    work, base = sensitive
    gate = base["output_psnr_db"] + 6
    result = _build(work, "--min-psnr", repr(gate), "--hybrid-rank-resolution", "32")
    assert result.returncode == 0, result.stderr
    out = work / "w8a8"
    report = json.loads((out / "report.json").read_text())
    ranked = report["sensitivity"]
    assert "sample [1, 4, 4, 4] (every 1x1x2x2)" in ranked["proxy"] and "proxy-export" in result.stderr
    assert ranked["costliest"][0]["tensor"] == SENSITIVE and ranked["unmatched"] < ranked["tensors"] // 10
    assert report["output_psnr_db"] >= gate and SENSITIVE in report["float16_layers"]
    assert json.loads((out / "stages" / "proxy-export" / "stage.json").read_text())["meta"]["resolution"] == 32

    odd = _build(work, "--min-psnr", repr(gate), "--hybrid-rank-resolution", "24")
    assert odd.returncode == 1 and error_lines(odd)[0].startswith("rkconvert: error: --hybrid-rank-resolution 24: ")
    assert (out / "stages" / "rknn").is_dir()  # a late refusal keeps what the build made


def test_diagnose_locates_a_quantized_build_in_parts_from_its_sensitivity(sensitive):
    """A w8a8 build in parts has no per-layer report (as SD 1.5 at 512 px has none): diagnose probes it with
    the build's own stages in parts and names the layer made sensitive from stage sensitivity, as precision."""
    work, base = sensitive
    gate = base["output_psnr_db"] + 6
    common = ("diagnose", "--target", "rk3588", "--model", "sensitive-unet", *QUANTIZED[:6], "--parts", "2",
              "--out", "parts")
    result = rkconvert(*common, "--min-psnr", repr(gate), cwd=work)
    assert result.returncode == 1, result.stderr
    diagnosis = json.loads((work / "parts" / "diagnosis" / "diagnosis.json").read_text())
    assert diagnosis["failure"]["kind"] == "accuracy" and diagnosis["parts"] == 2
    departed = diagnosis["departure"]
    assert departed["onnx_tensor"] == SENSITIVE and departed["cause"] == "precision", departed
    assert departed["alone_db"] < gate <= departed["costliest"][1]["alone_db"]
    assert abs(departed["emulated_db"] - departed["simulated_db"]) < 2.0
    assert "skipped" in diagnosis["reduction"]
    assert "first departure (estimated" in result.stdout and SENSITIVE in result.stdout
    stages = work / "parts" / "stages"
    assert (stages / "split").is_dir() and (stages / "sensitivity").is_dir() and not (stages / "toolkit-probe").exists()

    passing = rkconvert(*common, "--min-psnr", repr(base["output_psnr_db"] - 6), cwd=work)
    assert passing.returncode == 0, passing.stderr
    assert json.loads((work / "parts" / "diagnosis" / "diagnosis.json").read_text())["failure"] is None
    assert "(reused)" in passing.stderr  # the parts' build: the gate is not in its key
