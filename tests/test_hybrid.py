"""w8a8 under the gate: the fewest noisiest layers kept in float16 (hybrid quantization) that reach it."""

from __future__ import annotations

import json

from converter.layer_report import quantization_suspects
from tests.conftest import error_lines, rkconvert

QUANTIZED = ("--dtype", "w8a8", "--samples", "6", "--trajectories", "2", "--check-samples", "2")


def _fp16_layers(report: dict) -> int:
    return sum(r["dtype"] == "FLOAT16" and r["op"] not in ("InputOperator", "OutputOperator")
               for r in report["placement"])


def test_hybrid_search_reaches_the_gate_with_the_fewest_float16_layers(tiny_build):
    work, _, _, _ = tiny_build
    plain = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", *QUANTIZED, "--min-psnr", "0",
                      "--out", "w8a8", cwd=work)
    assert plain.returncode == 0, plain.stderr
    base = json.loads((work / "w8a8" / "report.json").read_text())
    gate = base["output_psnr_db"] + 6  # demand 6 dB more than plain w8a8 gives

    failed = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", *QUANTIZED, "--min-psnr", repr(gate),
                       "--no-hybrid", "--out", "w8a8", cwd=work)
    assert failed.returncode == 1 and "under --min-psnr" in error_lines(failed)[0]

    # One build allowed: k = 1 alone does not add 6 dB.
    capped = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", *QUANTIZED, "--min-psnr", repr(gate),
                       "--hybrid-builds", "1", "--out", "w8a8", cwd=work)
    assert capped.returncode == 1
    assert "within --hybrid-builds 1: best" in error_lines(capped)[0]
    assert not list((work / "w8a8").glob("*.rknn"))

    result = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", *QUANTIZED, "--min-psnr", repr(gate),
                       "--hybrid-builds", "30", "--out", "w8a8", cwd=work)
    assert result.returncode == 0, result.stderr
    report = json.loads((work / "w8a8" / "report.json").read_text())
    kept = len(report["float16_layers"])
    trials = {t["float16_layers"]: t["psnr_db"] for t in report["hybrid_trials"]}
    assert report["output_psnr_db"] >= gate and trials[kept] == report["output_psnr_db"]
    assert all(psnr < gate for k, psnr in trials.items() if k < kept), trials
    assert kept == 1 or trials[kept - 1] < gate  # one layer fewer was tried and fell short
    assert _fp16_layers(report) > _fp16_layers(base)
    assert "kept float16" in result.stdout


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
