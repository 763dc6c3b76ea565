"""`rkconvert build --parts N`: the graph built as N .rknn files, one toolkit child after another, chained in
the simulator; the result checked against the model built whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import error_lines, rkconvert, save_tiny_pipeline, tiny_unet
from targets import rknn_file


def _simulated(out: Path) -> np.ndarray:
    report = json.loads((out / "report.json").read_text())
    stage = out / "stages" / report["rknn_stage"]
    meta = json.loads((stage / "stage.json").read_text())["meta"]
    return np.load(stage / meta["simulator"][0][0])


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The tiny UNet built whole and in 2 parts (the parts build reusing the whole one's stages up to the
    reference, so both are handed the same graph and check inputs)."""
    work = tmp_path_factory.mktemp("parts")
    tiny_unet().save_pretrained(work / "tiny-unet")
    whole = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--out", "whole", cwd=work)
    assert whole.returncode == 0, whole.stderr
    shutil.copytree(work / "whole", work / "parts")
    parts = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--out", "parts", "--parts", "2", cwd=work)
    return work, parts


def test_parts_compute_what_the_whole_build_computes(builds):
    work, result = builds
    assert result.returncode == 0, result.stderr
    report = json.loads((work / "parts" / "report.json").read_text())
    whole = json.loads((work / "whole" / "report.json").read_text())
    assert [s["name"] for s in report["stages"] if s["reused"]] == ["export", "passes", "reference"]
    # The parts hand each other the activations the whole model's layers pass along; fusions across the cut
    # could round differently (measured: none, bit-identical).
    got, want = _simulated(work / "parts"), _simulated(work / "whole")
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
    assert report["output_psnr_db"] >= whole["output_psnr_db"] - 0.5
    assert report["cpu_ops"] == 0 and {r["part"] for r in report["placement"]} == {1, 2}


def test_each_part_is_delivered_and_declares_the_tensors_it_hands_on(builds):
    work, _ = builds
    out = work / "parts"
    report = json.loads((out / "report.json").read_text())
    first, second = report["parts"]
    assert [p["artifact"] for p in report["parts"]] == ["tiny-unet-rk3588.part1.rknn", "tiny-unet-rk3588.part2.rknn"]
    assert not (out / "tiny-unet-rk3588.rknn").exists()  # the copied whole build's artifact went as stale
    assert report["artifact"] == first["artifact"]
    assert report["artifact_bytes"] == sum((out / p["artifact"]).stat().st_size for p in report["parts"])
    declared = [rknn_file.read(out / p["artifact"]).to_json() for p in report["parts"]]
    assert [t["name"] for t in declared[0]["inputs"]] == first["inputs"]
    assert [t["name"] for t in declared[0]["outputs"]] == first["outputs"]
    handed = [name for name in second["inputs"] if name in first["outputs"]]
    assert handed and set(second["inputs"]) - set(handed) <= {"sample", "t_emb", "encoder_hidden_states"}
    assert second["outputs"] == ["out_sample"]
    assert (out / "logs" / "rknn-part1.log").is_file() and (out / "logs" / "rknn-part2.log").is_file()
    html = (out / "report.html").read_text()
    assert all(p["artifact"] in html for p in report["parts"])


def test_what_parts_cannot_do_yet_is_refused_in_one_line(builds, tmp_path):
    work, _ = builds
    quantized = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--out", str(tmp_path / "q"),
                          "--parts", "2", "--dtype", "w8a8", cwd=work)
    assert quantized.returncode == 2 and not (tmp_path / "q").exists()
    assert error_lines(quantized) == ["rkconvert: error: --parts 2 with --dtype w8a8: parts are built float16 only "
                                      "(each part would need its own calibration inputs)"]
    layers = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--out", str(tmp_path / "l"),
                       "--parts", "2", "--layer-report", "on", cwd=work)
    assert layers.returncode == 2 and "per-layer report" in error_lines(layers)[0]
    released = rkconvert("release", str(work / "parts"), cwd=work)
    assert released.returncode == 2
    assert error_lines(released) == [f"rkconvert: error: {work / 'parts' / 'report.json'}: built in 2 parts "
                                     "(--parts); release takes a build of one .rknn for now"]


def test_the_image_check_of_a_pipeline_in_parts_is_refused(tmp_path):
    save_tiny_pipeline(tmp_path / "pipe")
    on = rkconvert("build", "--target", "rk3588", "--model", "pipe", "--parts", "2", "--image-check", "on",
                   cwd=tmp_path)
    assert on.returncode == 2 and "image check" in error_lines(on)[0]
