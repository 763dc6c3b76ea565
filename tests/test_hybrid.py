"""w8a8 under the gate: the fewest noisiest layers kept in float16 (hybrid quantization) that reach it."""

from __future__ import annotations

import json
from io import StringIO

from rich.console import Console

from converter.reports.layer_report import quantization_suspects
from converter.reports.report import print_summary
from tests.conftest import error_lines, rkconvert

QUANTIZED = ("--dtype", "w8a8", "--samples", "6", "--trajectories", "2", "--check-samples", "2")


def _fp16_layers(report: dict) -> int:
    return sum(r["dtype"] == "FLOAT16" and r["op"] not in ("InputOperator", "OutputOperator")
               for r in report["placement"])


def test_hybrid_search_reaches_the_gate_with_the_fewest_float16_layers(tiny_build):
    """The search on real toolkit builds, kept to a handful of them: on random weights the error is
    spread over every layer (+6 dB needs ~230 of 256 layers in float16), so the gate is taken from
    the search's own first tries rather than fixed in advance."""
    work, _, _, _ = tiny_build

    def build(*args: str):
        return rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", *QUANTIZED, *args, "--out", "w8a8",
                         cwd=work)

    plain = build("--min-psnr", "0")
    assert plain.returncode == 0, plain.stderr
    base = json.loads((work / "w8a8" / "report.json").read_text())
    far = base["output_psnr_db"] + 6

    failed = build("--min-psnr", repr(far), "--no-hybrid")
    assert failed.returncode == 1 and "under --min-psnr" in error_lines(failed)[0]

    # Three builds allowed (1, 2 and 4 layers in float16): +6 dB is out of their reach.
    capped = build("--min-psnr", repr(far), "--hybrid-builds", "3")
    assert capped.returncode == 1
    assert "within --hybrid-builds 3: best" in error_lines(capped)[0]
    assert not list((work / "w8a8").glob("*.rknn"))
    tried = {t["float16_layers"]: t["psnr_db"] for t in json.loads((work / "w8a8" / "report.json").read_text())["hybrid_trials"]}
    assert sorted(tried) == [1, 2, 4]

    # A gate one of those tries reached: the search reuses them and bisects at most once more.
    gate = max(tried.values())
    result = build("--min-psnr", repr(gate), "--hybrid-builds", "30")
    assert result.returncode == 0, result.stderr
    report = json.loads((work / "w8a8" / "report.json").read_text())
    kept = len(report["float16_layers"])
    trials = {t["float16_layers"]: t["psnr_db"] for t in report["hybrid_trials"]}
    assert report["output_psnr_db"] >= gate and trials[kept] == report["output_psnr_db"]
    assert all(psnr < gate for k, psnr in trials.items() if k < kept), trials
    assert kept == 1 or trials[kept - 1] < gate  # one layer fewer was tried and fell short
    assert _fp16_layers(report) > _fp16_layers(base)
    assert "kept float16" in result.stdout
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

    # Two builds at a time (k-ary rounds), everything built again: the same layers kept, the same
    # PSNR for every count both searches tried (the builds are deterministic).
    rounds = build("--min-psnr", repr(gate), "--hybrid-builds", "30", "--hybrid-parallel", "2", "--rebuild")
    assert rounds.returncode == 0, rounds.stderr
    again = json.loads((work / "w8a8" / "report.json").read_text())
    assert len(again["float16_layers"]) == kept and again["output_psnr_db"] == report["output_psnr_db"]
    tried_twice = {t["float16_layers"]: t["psnr_db"] for t in again["hybrid_trials"]}
    assert all(tried_twice[k] == psnr for k, psnr in trials.items() if k in tried_twice)
    assert "2 builds at once" in rounds.stderr


def test_float16_candidates_skip_rows_whose_error_the_toolkits_float_run_has_too():
    # Rows as the SD 1.5 UNet's w8a8 report had them: a partial sum of a tiled convolution, matched to
    # the whole convolution's output, looks noisiest; float16 cannot change what it is compared with.
    rows = [
        {"layer": "conv1/Conv_output_0_tile4_conv_add", "op": "Add", "mapping": "matched",
         "golden_cosine": 0.7885, "added_noise_db": -4.24, "cosine": 0.78},
        {"layer": "attn1/to_q/MatMul_output_0_mm", "op": "exMatMul", "mapping": "matched",
         "golden_cosine": 0.9999999, "added_noise_db": -30.0, "cosine": 0.9990},
        {"layer": "conv2/Conv_output_0", "op": "Conv", "mapping": "exact",
         "golden_cosine": 0.9999999, "added_noise_db": -25.0, "cosine": 0.9980},
        {"layer": "sample", "op": "Input", "mapping": "exact", "golden_cosine": 1.0, "added_noise_db": -20.0},
        {"layer": "conv1/Conv_output_0_tile0_conv", "op": "Conv", "mapping": "unmapped", "added_noise_db": None},
    ]
    assert quantization_suspects(rows) == ["conv2/Conv_output_0", "attn1/to_q/MatMul_output_0_mm"]
