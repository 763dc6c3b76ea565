"""`rkconvert build` end to end on tiny UNets: real tracing, real toolkit, real simulator, real ORT."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console
from safetensors.torch import save_file

from converter.builds.builder import build
from converter.builds.request import BuildRequest
from converter.common import onnx_files, onnx_runtime
from converter.common.progress import Progress
from converter.models.model_source import resolve
from targets import get_chip
from tests.conftest import error_lines, rkconvert, tiny_unet
from tools.make_pruned_unet import prune_unet

REQUIRED = ("target", "model", "resolution", "dtype", "artifact", "artifact_bytes", "onnx_bytes",
            "output_psnr_db", "output_cosine", "output_max_abs", "stages", "toolkit_version")


@pytest.fixture
def built(tiny_build):
    work, result, _, _ = tiny_build
    return work, result


def test_build_writes_rknn_and_report(tiny_build):
    work, result, out, report = tiny_build
    assert result.returncode == 0, result.stderr
    assert all(key in report for key in REQUIRED)
    assert report["status"] == "ok" and report["target"] == "rk3588" and report["dtype"] == "float16"
    assert report["resolution"] == 64  # the config's sample_size 8 x 8
    assert report["output_psnr_db"] >= 50 and report["output_cosine"] > 0.9999
    assert report["toolkit_version"] == "2.5.0"
    artifact = out / report["artifact"]
    assert artifact.name == "tiny-unet-rk3588.rknn"
    assert artifact.stat().st_size == report["artifact_bytes"] > 0
    assert report["onnx_bytes"] == (out / "stages" / "passes" / "model.onnx").stat().st_size
    assert [s["name"] for s in report["stages"]] == ["export", "passes", "reference", "rknn", "layers"]
    assert all(s["seconds"] > 0 and not s["reused"] for s in report["stages"])
    assert "PSNR" in result.stdout
    # Memory per toolkit call (and the child's imports before them); the child's peak is the largest.
    peaks = report["toolkit_phase_peak_rss_bytes"]
    assert set(peaks) == {"startup", *report["toolkit_phases"]} and all(v > 0 for v in peaks.values())
    assert peaks["build"] > peaks["startup"]
    assert report["peak_rss_bytes"]["toolkit"] >= max(peaks.values())
    cost = report["cost"]  # the toolkit's estimate, summed from its layer table
    compute = [r for r in report["placement"] if r["op"] not in ("InputOperator", "OutputOperator")]
    assert cost["total_cycles"] == sum(r["total_cycles"] for r in compute) > 0
    assert sum(m["total_cycles"] for m in cost["per_module"].values()) == cost["total_cycles"]
    assert cost["estimated_seconds_per_step"] == cost["total_cycles"] / 1e9  # rk3588's NPU at 1 GHz
    assert cost["attention_layers"] == sum(r["op"] == "exSDPAttention" for r in compute) > 0
    assert "not measured on a board" in cost["label"] and cost["weight_bytes"] > 0 and cost["internal_bytes"] > 0
    assert "cost (estimate)" in result.stdout
    assert not list(out.rglob("check*.onnx")) and not list(work.glob("check*.onnx"))


def test_host_program_computes_what_the_rknn_takes(built):
    work, _ = built
    out = work / "build" / "tiny-unet-rk3588"
    report = json.loads((out / "report.json").read_text())
    (program,) = report["host_programs"]
    t_emb = onnx_runtime.run(onnx_runtime.session(out / program), {"timestep": np.array([500.0], np.float32)})
    fed = np.load(out / "stages" / "reference" / "inputs" / "0-t_emb.npy")
    np.testing.assert_array_equal(t_emb["t_emb"], fed)
    assert report["inputs"]["t_emb"]["shape"] == [1, 32]


def test_second_run_reuses_every_stage(built):
    work, first = built
    again = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", cwd=work)
    assert again.returncode == 0, again.stderr
    report = json.loads((work / "build" / "tiny-unet-rk3588" / "report.json").read_text())
    assert all(s["reused"] for s in report["stages"])
    assert "(reused)" in again.stderr


def test_accuracy_gate_fails_without_artifact(built):
    work, _ = built
    result = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--min-psnr", "200", cwd=work)
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "under --min-psnr 200" in line
    out = work / "build" / "tiny-unet-rk3588"
    assert not list(out.glob("*.rknn"))
    assert json.loads((out / "report.json").read_text())["status"] == "failed"


def test_without_the_pass_the_toolkit_crash_is_reported(built):
    work, _ = built
    result = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--out", "raw",
                       "--skip-pass", "host_time_projection", "--skip-pass", "drop_unit_slice_steps", cwd=work)
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "rknn-toolkit2 2.5.0 died with SIGSEGV during build()" in line
    assert "full log:" in result.stderr
    assert not list((work / "raw").rglob("*.rknn"))
    report = json.loads((work / "raw" / "report.json").read_text())
    assert report["status"] == "failed" and "SIGSEGV" in report["error"]


def test_onnx_and_pruned_sources_build(built, tmp_path):
    work, _ = built
    onnx_path = work / "build" / "tiny-unet-rk3588" / "stages" / "export" / "model.onnx"
    result = rkconvert("build", "--target", "rk3588", "--model", str(onnx_path), "--out", str(tmp_path / "o"),
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "o" / "report.json").read_text())["output_psnr_db"] >= 50

    folder = tmp_path / "pruned"
    folder.mkdir()
    tiny_unet().save_config(folder)
    pruned = prune_unet(tiny_unet(), 0.25, 64)
    save_file({k: v.contiguous() for k, v in pruned.state_dict().items()},
              folder / "diffusion_pytorch_model.safetensors")
    result = rkconvert("build", "--target", "rk3588", "--model", str(folder), "--out", str(tmp_path / "p"),
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["output_psnr_db"] >= 50
    assert report["onnx_bytes"] < json.loads((tmp_path / "o" / "report.json").read_text())["onnx_bytes"]


def test_external_data_is_kept_through_every_stage(tmp_path, monkeypatch):
    """Weights past 2 GB live in one .data file from export to the toolkit (threshold lowered here)."""
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_ABOVE", 0)
    folder = tmp_path / "tiny-unet"
    tiny_unet().save_pretrained(folder)
    req = BuildRequest(resolve(str(folder)), get_chip("rk3588"), tmp_path / "out")
    report = build(req, Progress(Console(file=open(tmp_path / "progress.txt", "w")))).to_json()
    for stage in ("export", "passes"):
        assert (tmp_path / "out" / "stages" / stage / "model.onnx.data").stat().st_size > 1_000_000
    assert report["output_psnr_db"] >= 50
    assert report["onnx_bytes"] > (tmp_path / "out" / "stages" / "passes" / "model.onnx.data").stat().st_size
