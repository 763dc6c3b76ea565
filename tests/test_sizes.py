"""`build --resolution A,B`: an ordinary build of each size, indexed by the build folder's report.json; one
release bundle of them (the size-free parts once), whose runner draws at either size with --size."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile

import numpy as np
from PIL import Image

from converter.board.manifest import Manifest
from tests.conftest import error_lines, rkconvert


def test_two_sizes_build_into_one_bundle_whose_runner_draws_at_both(tiny_pipeline_build, tmp_path):
    work, result, whole = tiny_pipeline_build
    assert result.returncode == 0, result.stderr
    out = tmp_path / "sizes"
    shutil.copytree(whole, out / "64px")  # the pipeline's own size, built already
    built = rkconvert("build", "--target", "rk3588", "--model", str(work / "tiny-pipeline"), "--resolution", "64,128",
                      "--layer-report", "off", "--out", str(out), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    # A copied build folder reuses its text encoder and decoder builds (their source is the traced stage's key,
    # not a path), and at the size it was built at, every stage.
    for part in ("text_encoder", "vae_decoder"):
        assert f"{part}: rknn rknn-toolkit2 float16 build for rk3588 + simulator (reused)" in built.stderr
    index = json.loads((out / "report.json").read_text())
    assert index["status"] == "ok" and list(index["sizes"]) == ["64", "128"]
    reports = {size: json.loads((out / entry["folder"] / "report.json").read_text())
               for size, entry in index["sizes"].items()}
    assert all(stage["reused"] for stage in reports["64"]["stages"])
    assert not next(stage for stage in reports["128"]["stages"] if stage["name"] == "export")["reused"]
    for size, report in reports.items():
        assert report["status"] == "ok" and report["resolution"] == int(size)
        assert report["rknn_file"]["inputs"][0]["shape"][-1] == int(size) // 8
        assert index["sizes"][size]["output_psnr_db"] == report["output_psnr_db"] >= 40
    assert "sizes  64 px, 128 px" in built.stdout

    bundle = tmp_path / "tiny.tar.gz"
    released = rkconvert("release", str(out), "--out", str(bundle), cwd=tmp_path)
    assert released.returncode == 0, released.stderr
    verified = rkconvert("verify", str(bundle), cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
        names = set(tar.getnames())
        made = Manifest.loads(tar.extractfile("tiny/manifest.json").read())
    # Per size: the UNet, its check tensors and the decoder; once: the text encoder, runner, tokenizer, scheduler.
    assert {"tiny/model.rknn", "tiny/128px/model.rknn", "tiny/npu/vae_decoder.rknn", "tiny/128px/npu/vae_decoder.rknn",
            "tiny/cpu/vae_decoder.onnx", "tiny/128px/cpu/vae_decoder.onnx", "tiny/npu/text_encoder.rknn",
            "tiny/128px/check/input-sample.npy", "tiny/board/run.py"} <= names
    assert not {n for n in names if n.startswith("tiny/128px/") and ("text_encoder" in n or "/board/" in n
                                                                     or "tokenizer" in n)}
    assert made.first.resolution == 64 and made.resolutions() == ["64", "128"]  # the first size on top
    assert made.at(128).pipeline.latent_shape == [1, 4, 16, 16]
    assert made.at(128).npu_models()["text_encoder"].rknn == "npu/text_encoder.rknn"
    assert made.at(128).npu_models()["vae_decoder"].rknn == "128px/npu/vae_decoder.rknn"

    folder = tmp_path / "unpacked" / "tiny"
    for size, report in reports.items():
        first = report["images"]["rows"][0]
        run = tmp_path / f"run-{size}"
        ran = subprocess.run([sys.executable, "board/run.py", "--simulate", str(out), "--size", size,
                              "--prompt", first["prompt"], "--seed", str(first["seed"]),
                              "--steps", str(report["images"]["steps"]), "--out", str(run)],
                             cwd=folder, capture_output=True, text=True, timeout=900)
        assert ran.returncode == 0, ran.stderr
        timing = json.loads((run / "timing.json").read_text())
        assert timing["size"] == int(size) and timing["on"] == {"text_encoder": "npu", "vae_decoder": "npu"}
        assert timing["unet_check"]["max_abs_vs_build_simulator"] == 0
        drawn = np.asarray(Image.open(run / timing["image"]).convert("RGB")).astype(int)
        expected = np.asarray(Image.open(out / f"{size}px" / "images" / "evaluation" / first["rknn"]).convert("RGB"))
        assert drawn.shape == (int(size), int(size), 3)
        # numpy's sampler and noise against diffusers' and torch's: a level here and there.
        assert np.abs(drawn - expected.astype(int)).max() <= 2

    other = subprocess.run([sys.executable, "board/run.py", "--simulate", str(out), "--size", "96"], cwd=folder,
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and other.stderr.strip() == "run.py: error: --size 96: this bundle draws at 64, 128 px"
    generated = rkconvert("generate", str(out), "--prompt", "a red circle", cwd=tmp_path)
    assert generated.returncode == 2
    assert error_lines(generated) == [f"rkconvert: error: {out}: one build per size (--resolution A,B,...): name one "
                                      f"of {out / '64px'}, {out / '128px'}"]
