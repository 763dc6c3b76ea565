"""`rkconvert build --parts N`: the graph built as N .rknn files, one toolkit child after another, chained in
the simulator; the results (outputs, pictures) checked against the model built whole."""

from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from converter.board.manifest import Manifest
from converter.board.run import chain
from converter.common import onnx_runtime
from converter.release import tarball
from converter.toolkit import rknn_file
from tests.conftest import (
    SAME_WEIGHTS_ATOL,
    SAME_WEIGHTS_RTOL,
    error_lines,
    rkconvert,
    tiny_unet,
)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


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


def test_the_per_layer_report_of_a_build_in_parts_is_refused_in_one_line(builds, tmp_path):
    work, _ = builds
    layers = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--out", str(tmp_path / "l"),
                       "--parts", "2", "--layer-report", "on", cwd=work)
    assert layers.returncode == 2 and not (tmp_path / "l").exists()
    assert error_lines(layers) == ["rkconvert: error: --parts 2: the per-layer report (--layer-report on, "
                                   "--min-layer-cos) covers a model built whole"]


def test_a_quantized_build_in_parts_calibrates_each_part_on_what_reaches_it(builds, tmp_path):
    """w8a8 in 2 parts: part 2 calibrates on part 1's float outputs for every recorded sample (ONNX Runtime),
    and the result is the whole w8a8 build's (measured: 38.24 dB both, 3e-6 dB apart)."""
    work, _ = builds
    args = ["build", "--target", "rk3588", "--model", "tiny-unet", "--dtype", "w8a8", "--no-hybrid", "--min-psnr", "0"]
    whole = rkconvert(*args, "--out", str(tmp_path / "whole"), cwd=work)
    assert whole.returncode == 0, whole.stderr
    shutil.copytree(tmp_path / "whole", tmp_path / "parts")
    parts = rkconvert(*args, "--out", str(tmp_path / "parts"), "--parts", "2", cwd=work)
    assert parts.returncode == 0, parts.stderr
    report = json.loads((tmp_path / "parts" / "report.json").read_text())
    expected = json.loads((tmp_path / "whole" / "report.json").read_text())
    assert abs(report["output_psnr_db"] - expected["output_psnr_db"]) <= 0.5
    stage = tmp_path / "parts" / "stages" / "split-calib"
    meta = json.loads((stage / "stage.json").read_text())["meta"]
    assert meta["count"] == report["calibration"]["count"] == 32
    first, second = ((stage / name).read_text().split("\n")[0].split() for name in meta["datasets"])
    assert len(first) == 3 and len(second) == len(report["parts"][1]["inputs"])
    assert all((stage / f).is_file() for f in second)  # part 1's outputs for the sample, and its recorded inputs


def test_a_pipeline_in_parts_draws_the_images_the_whole_build_draws(tiny_pipeline_build, tmp_path):
    """The image check and `generate` chain a simulator per part: the same pictures as the model built whole."""
    work, result, whole = tiny_pipeline_build
    assert result.returncode == 0, result.stderr
    out = tmp_path / "parts"
    shutil.copytree(whole, out)
    built = rkconvert("build", "--target", "rk3588", "--model", str(work / "tiny-pipeline"), "--layer-report", "off",
                      "--out", str(out), "--parts", "2", cwd=work)
    assert built.returncode == 0, built.stderr
    report = json.loads((out / "report.json").read_text())
    images = report["images"]
    assert len(report["parts"]) == 2 and len(images["rows"]) == 2
    want = json.loads((whole / "report.json").read_text())["images"]
    for row, expected in zip(images["rows"], want["rows"]):  # the pictures, compared as the whole build's were
        assert _png(out / "images" / "evaluation" / row["rknn"]).tolist() == \
            _png(whole / "images" / "evaluation" / expected["rknn"]).tolist()
    assert (out / "logs" / "rknn-images-part1.log").is_file()
    generated = rkconvert("generate", str(out), "--prompt", "a red circle on the left", "--steps", "2",
                          "--out", str(tmp_path / "gen"), cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    assert (tmp_path / "gen" / "00-rknn.png").is_file()


def test_a_release_in_parts_verifies_and_its_runner_chains_the_parts(builds, tmp_path):
    """The bundle carries each part with the tensors it takes and hands on; verify checks every part's own
    account; the runner's chain (what it runs on the NPU) fed ONNX Runtime sessions of the parts computes the
    reference output, and its --simulate run (verify --run) the build's."""
    work, _ = builds
    out = work / "parts"
    bundle = tmp_path / "parts.tar.gz"
    released = rkconvert("release", str(out), "--out", str(bundle), cwd=work)
    assert released.returncode == 0, released.stderr
    with tarfile.open(bundle, "r:gz") as tar:
        made = Manifest.loads(tar.extractfile("parts/manifest.json").read())
        names = sorted(n for n in tar.getnames() if n.endswith(".rknn"))
    assert names == ["parts/model.part1.rknn", "parts/model.part2.rknn"]
    report = json.loads((out / "report.json").read_text())
    assert [p.rknn for p in made.first.parts] == ["model.part1.rknn", "model.part2.rknn"]
    assert [[t.name for t in p.inputs] for p in made.first.parts] == [p["inputs"] for p in report["parts"]]
    ran = rkconvert("verify", str(bundle), "--run", str(out), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "equals the build's" in ran.stdout

    split = json.loads((out / "stages" / "split" / "stage.json").read_text())["meta"]["parts"]
    sessions = [onnx_runtime.session(out / "stages" / "split" / p["onnx"]) for p in split]
    infers = [lambda xs, s=s: s.run(None, dict(zip((i.name for i in s.get_inputs()), xs))) for s in sessions]
    reference = json.loads((out / "stages" / "reference" / "stage.json").read_text())["meta"]
    feed = {k: np.load(out / "stages" / "reference" / v) for k, v in reference["samples"][0].items()}
    got = chain(made.first.parts, infers)(feed)
    want = np.load(out / "stages" / "reference" / reference["outputs"][0]["out_sample"])
    np.testing.assert_allclose(got, want, rtol=SAME_WEIGHTS_RTOL, atol=SAME_WEIGHTS_ATOL)


def test_a_bundle_whose_part_says_other_tensors_fails_verify(builds, tmp_path):
    work, _ = builds
    bundle = tmp_path / "parts.tar.gz"
    assert rkconvert("release", str(work / "parts"), "--out", str(bundle), cwd=work).returncode == 0
    members = {}
    with tarfile.open(bundle, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    made = Manifest.loads(members["parts/manifest.json"])
    second = made.first.parts[1]
    parts = [made.first.parts[0], replace(second, inputs=second.inputs[:-1])]
    members["parts/manifest.json"] = replace(made, first=replace(made.first, parts=parts)).dumps().encode()
    tarball.write(tmp_path / "edited.tar.gz", members)
    checked = rkconvert("verify", str(tmp_path / "edited.tar.gz"), cwd=tmp_path)
    assert checked.returncode != 0
    assert "model.part2.rknn: the file says inputs" in checked.stdout + checked.stderr
