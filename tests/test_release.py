"""rkconvert release / verify: a bundle says what it is from the .rknn itself, is byte-for-byte
reproducible, and verify names whatever was changed, added, removed or unsafe."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from converter.board.manifest import Check, Manifest
from converter.imaging.evaluation import psnr
from converter.models.demo.judge import judge
from converter.release import tarball
from converter.reports.build_report import BuildReport
from tests.conftest import error_lines, rkconvert


@pytest.fixture(scope="module")
def released(tiny_artifact_build, tmp_path_factory):
    work, out = tiny_artifact_build
    folder = tmp_path_factory.mktemp("release")
    result = rkconvert("release", str(out), "--out", str(folder / "tiny.tar.gz"), cwd=work)
    assert result.returncode == 0, result.stderr
    return work, out, folder / "tiny.tar.gz"


def _members(bundle) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _verify(work, bundle):
    return rkconvert("verify", str(bundle), cwd=work)


def test_release_carries_what_the_rknn_declares_and_verifies(released):
    work, out, bundle = released
    report = json.loads((out / "report.json").read_text())
    members = _members(bundle)
    assert sorted(members) == [
        "tiny/board/clip_tokenizer.py", "tiny/board/manifest.py", "tiny/board/noise.py", "tiny/board/png.py",
        "tiny/board/redraw.py", "tiny/board/run.py",
        "tiny/board/samplers.py", "tiny/check/input-encoder_hidden_states.npy", "tiny/check/input-sample.npy",
        "tiny/check/input-t_emb.npy", "tiny/check/reference-out_sample.npy", "tiny/check/simulator-out_sample.npy",
        "tiny/host/host_time_projection.onnx", "tiny/manifest.json", "tiny/model.rknn", "tiny/report.html",
        "tiny/report.json"]  # a UNet alone: no text encoder, decoder, tokenizer or scheduler
    made = Manifest.loads(members["tiny/manifest.json"])
    one = made.first
    assert one.pipeline is None and one.check == Check("check", ["sample", "t_emb", "encoder_hidden_states"],
                                                       ["out_sample"])
    assert made.target == "rk3588" and made.librknnrt_version == made.toolkit_version == "2.5.0"
    assert [vars(t) for t in one.inputs] == report["rknn_file"]["inputs"] and one.inputs[0].dtype == "float16"
    assert made.files["model.rknn"].sha256 == hashlib.sha256((out / report["artifact"]).read_bytes()).hexdigest()
    assert one.accuracy.output_psnr_db == report["output_psnr_db"]
    assert one.build_command == report["command"]
    assert Manifest.loads(made.dumps()) == made  # what it writes, it reads back
    assert report["command"].startswith("rkconvert build --target rk3588")
    shown = _verify(work, bundle)
    assert shown.returncode == 0, shown.stderr
    assert "verified, 16 files match manifest.json; rk3588" in shown.stdout


def test_the_same_build_gives_byte_identical_bundles(released, tmp_path):
    work, out, bundle = released
    (tmp_path / "again").mkdir()
    again = tmp_path / "again" / "tiny.tar.gz"
    assert rkconvert("release", str(out), "--out", str(again), cwd=work).returncode == 0
    assert again.read_bytes() == bundle.read_bytes()


def _repack(bundle, path, edit):
    members = _members(bundle)
    edit(members)
    tarball.write(path, members)
    return path


def test_verify_names_a_flipped_byte_a_missing_and_an_added_file(released, tmp_path):
    work, _, bundle = released

    def flip(m):
        data = bytearray(m["tiny/model.rknn"])
        data[len(data) // 2] ^= 0xFF
        m["tiny/model.rknn"] = bytes(data)

    def retarget(m):  # a manifest that lies about the target, with its checksums intact
        m["tiny/manifest.json"] = replace(Manifest.loads(m["tiny/manifest.json"]), target="rk3576").dumps().encode()

    cases = {
        "flipped": (flip, "tiny.tar.gz: model.rknn: sha256 differs from the manifest"),
        "missing": (lambda m: m.pop("tiny/report.html"),
                    "tiny.tar.gz: report.html: listed in the manifest, not in the bundle"),
        "added": (lambda m: m.update({"tiny/extra.bin": b"x"}),
                  "tiny.tar.gz: extra.bin: in the bundle, not in the manifest"),
        "retarget": (retarget, "tiny.tar.gz: model.rknn: the file says target 'rk3588', the manifest 'rk3576'"),
        "schema": (lambda m: m.update({"tiny/manifest.json": b'{"schema": "rkconvert-bundle/1"}'}),
                   "tiny.tar.gz: manifest.json: schema 'rkconvert-bundle/1', expected 'rkconvert-bundle/2': "
                   "release the build again"),
    }
    for name, (edit, expected) in cases.items():
        (tmp_path / name).mkdir()
        result = _verify(work, _repack(bundle, tmp_path / name / "tiny.tar.gz", edit))
        assert result.returncode == 1, (name, result.stdout)
        lines = [line.replace(str(tmp_path / name) + "/", "") for line in result.stderr.splitlines()]
        assert expected in lines, (name, lines)


@pytest.mark.parametrize("member, why", [
    ("../evil.txt", "path with '..'"),
    ("/tmp/evil.txt", "absolute path"),
    ("tiny/link", "link to /etc/passwd"),
])
def test_unsafe_tarballs_are_refused_before_anything_is_written(released, tmp_path, member, why):
    work, _, bundle = released
    crafted = tmp_path / "crafted.tar.gz"
    with tarfile.open(crafted, "w:gz") as tar:
        for name, data in _members(bundle).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(member)
        if member.endswith("link"):
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        else:
            info.size = 4
        tar.addfile(info, io.BytesIO(b"evil") if info.isfile() else None)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = _verify(tmp_path, crafted)
    assert result.returncode == 2
    assert error_lines(result) == [f"rkconvert: error: {crafted}: member {member!r} refused: {why}"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not (tmp_path.parent / "evil.txt").exists()


def test_release_refuses_what_it_cannot_bundle(released, tmp_path):
    work, out, _ = released
    bad_name = rkconvert("release", str(out), "--out", str(tmp_path / "tiny.zip"), cwd=work)
    assert error_lines(bad_name) == [f"rkconvert: error: {tmp_path / 'tiny.zip'}: a release is written as NAME.tar.gz"]
    empty = rkconvert("release", str(tmp_path), "--out", str(tmp_path / "x.tar.gz"), cwd=work)
    assert empty.returncode == 2
    assert error_lines(empty) == [f"rkconvert: error: {tmp_path}: no report.json (not an rkconvert build folder)"]
    assert list(tmp_path.iterdir()) == []
    not_a_bundle = rkconvert("verify", str(out / "report.json"), cwd=work)
    assert not_a_bundle.returncode == 2 and "not a readable .tar.gz" in error_lines(not_a_bundle)[0]


def test_a_build_whose_rknn_was_deleted_or_changed_is_not_opened(released, tmp_path):
    """Opening a finished build checks the .rknn its report names (present, same size and sha256): what
    release, generate and the runner's --simulate start from."""
    work, out, _ = released
    report = BuildReport.from_json(json.loads((out / "report.json").read_text()))
    (artifact,) = report.artifacts
    for case, damage in (("deleted", lambda path: path.unlink()),
                         ("flipped", lambda path: path.write_bytes(_flipped(path.read_bytes())))):
        copy = tmp_path / case
        shutil.copytree(out, copy)
        damage(copy / artifact)
        refused = rkconvert("release", str(copy), "--out", str(tmp_path / f"{case}.tar.gz"), cwd=work)
        assert refused.returncode == 2 and not (tmp_path / f"{case}.tar.gz").exists()
        expected = ("missing from the build folder" if case == "deleted"
                    else "not the .rknn this build delivered (its size or sha256 differs)")
        assert error_lines(refused) == [f"rkconvert: error: {copy / artifact}: {expected}; only a finished build can "
                                        "be released"]


def _flipped(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


def _unpack(bundle, into):
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(into, filter="data")
    return into / bundle.name[:-len(".tar.gz")]


def _runner(folder, *args, timeout=600):
    return subprocess.run([sys.executable, "board/run.py", *args], cwd=folder, capture_output=True, text=True,
                          timeout=timeout)


def runner_against_generate(build: Path, drawing: tuple[str, ...], scratch: Path, cwd: Path) -> tuple[float, dict]:
    """Draw `drawing` with `rkconvert generate` on `build` and with the board runner of its release bundle under
    --simulate: (the runner's image's PSNR against generate's .rknn image, the runner's timing.json)."""
    generated = rkconvert("generate", str(build), *drawing, "--out", str(scratch / "gen"), cwd=cwd)
    assert generated.returncode == 0, generated.stderr
    assert rkconvert("release", str(build), "--out", str(scratch / "bundle.tar.gz"), cwd=cwd).returncode == 0
    ran = _runner(_unpack(scratch / "bundle.tar.gz", scratch / "bundle"), "--simulate", str(build), *drawing,
                  "--out", str(scratch / "run"))
    assert ran.returncode == 0, ran.stderr
    timing = json.loads((scratch / "run" / "timing.json").read_text())
    drawn = np.asarray(Image.open(scratch / "run" / timing["image"]))
    return psnr(drawn, np.asarray(Image.open(scratch / "gen" / "00-rknn.png"))), timing


def test_the_board_runner_checks_and_runs_a_unet_bundle_in_the_simulator(released, tmp_path):
    work, out, bundle = released
    folder = _unpack(bundle, tmp_path)
    report = json.loads((out / "report.json").read_text())
    # verify --run unpacks the bundle and runs its runner with --simulate: the check output must be the build's.
    ran = rkconvert("verify", str(bundle), "--run", str(out), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert (f"board/run.py --simulate: the UNet's output on the check input equals the build's (PSNR "
            f"{report['output_psnr_db']:.1f} dB against ONNX Runtime)") in ran.stdout
    # What a host without the NPU runtime, a UNet-only bundle asked to draw, and a damaged file get:
    no_npu = _runner(folder)
    assert no_npu.returncode == 2 and "rknn-toolkit-lite2 is not installed" in no_npu.stderr
    no_text = _runner(folder, "--prompt", "a red circle", "--simulate", str(out))
    assert no_text.returncode == 2 and "is a UNet alone" in no_text.stderr
    (folder / "check" / "input-sample.npy").write_bytes(b"damaged")
    damaged = _runner(folder, "--simulate", str(out))
    assert damaged.returncode == 2
    assert damaged.stderr.strip() == "run.py: error: check/input-sample.npy: sha256 differs from manifest.json " \
                                     "(a damaged or edited bundle)"


def test_the_board_runner_draws_the_demo_as_the_build_did(demo_build, tmp_path):
    """Prompt to PNG on the runner's own parts (numpy DDIM and noise, plain-Python tokenizer) with the UNet, the
    text encoder and the VAE decoder on the NPU (in the simulator): the build's own image of that prompt and seed,
    which its image check drew through the same three .rknn."""
    result, build = demo_build
    assert result.returncode == 0, result.stderr
    bundle = tmp_path / "demo.tar.gz"
    assert rkconvert("release", str(build), "--out", str(bundle), cwd=tmp_path).returncode == 0
    (tmp_path / "again").mkdir()  # the traced text encoder and decoder are kept: the same bytes again
    again = tmp_path / "again" / "demo.tar.gz"
    assert rkconvert("release", str(build), "--out", str(again), cwd=tmp_path).returncode == 0
    assert again.read_bytes() == bundle.read_bytes()
    folder = _unpack(bundle, tmp_path)
    report = json.loads((build / "report.json").read_text())
    row, steps = report["images"]["rows"][0], report["images"]["steps"]
    ran = _runner(folder, "--simulate", str(build), "--prompt", row["prompt"], "--seed", str(row["seed"]),
                  "--steps", str(steps), "--out", str(tmp_path / "run"))
    assert ran.returncode == 0, ran.stderr
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    assert len(timing["unet_step_seconds"]) == steps
    assert timing["on"] == {"text_encoder": "npu", "vae_decoder": "npu"}
    assert report["images"]["on_npu"] == ["unet", "text_encoder", "vae_decoder"]
    assert report["images"]["summary"]["rknn_prompt_accuracy"] == 1.0
    drawn = np.asarray(Image.open(tmp_path / "run" / timing["image"])).astype(int)
    expected = np.asarray(Image.open(build / "images" / "evaluation" / row["rknn"])).astype(int)
    # numpy's sampler and noise against diffusers' and torch's, within 5e-7: a level here and there.
    assert np.abs(drawn - expected).max() <= 2 and (drawn != expected).mean() < 0.05
    assert judge(drawn.astype(np.uint8), row["prompt"]).ok
    # Other samplers: each against diffusers' step for step, with the ancestral noise continuing the seed's
    # generator (tests/test_board_parts.py), and an LCM bundle through the runner against `rkconvert generate`
    # (tests/test_lcm.py); one more runner and generate here would rebuild the three .rknn twice more.
