"""`rkconvert matrix`: a release's builds from one file, each an ordinary build, one summary; a failed entry
does not stop the others."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from converter.common.errors import UserError
from converter.matrix import spec
from tests.conftest import HANG_GUARD_SECONDS, error_lines, rkconvert, tiny_unet

DEFAULTS = """
[defaults]
resolution = 64
layer-report = "off"
min-psnr = 20
hybrid = false          # a w8a8 build under the gate fails rather than searching
samples = 4
trajectories = 1
"""
CRASH = """
[[entry]]
name = "flip-crash"
model = "tiny-unet"
target = "rk3588"
skip-pass = ["host_time_projection", "drop_unit_slice_steps"]
"""
MATRIX = DEFAULTS + """
[axes]
model = ["tiny-unet"]
target = ["rk3588", "rk3576"]

[[entry]]
name = "rk3588-w8a8"
model = "tiny-unet"
target = "rk3588"
dtype = "w8a8"
""" + CRASH
# On Ray, the entries that can tell an executor apart: a quantized build (its calibration runs in the
# task), the one killed on the way, the crash.
RAY_MATRIX = DEFAULTS + """
[[entry]]
name = "rk3588-w8a8"
model = "tiny-unet"
target = "rk3588"
dtype = "w8a8"

[[entry]]
name = "rk3576"
model = "tiny-unet"
target = "rk3576"
""" + CRASH


@pytest.fixture(scope="module")
def local_matrix(tmp_path_factory):
    work = tmp_path_factory.mktemp("matrix")
    tiny_unet().save_pretrained(work / "tiny-unet")
    (work / "release.toml").write_text(MATRIX)
    result = rkconvert("matrix", "release.toml", "--out", str(work / "out"), cwd=work)
    return work, result, json.loads((work / "out" / "summary.json").read_text())


def test_every_entry_is_an_ordinary_build_and_the_crash_stops_none(local_matrix):
    work, result, summary = local_matrix
    assert result.returncode == 1, result.stderr  # one entry failed
    rows = {r["entry"]: r for r in summary["entries"]}
    assert list(rows) == ["rk3588", "rk3576", "rk3588-w8a8", "flip-crash"]
    assert summary["counts"] == {"failed": 1, "ok": 3} and summary["executor"] == "local"
    for name, row in rows.items():
        report = json.loads((work / "out" / name / "report.json").read_text())
        if name == "flip-crash":
            assert row["status"] == "failed" and "died with SIGSEGV" in row["error"]
            assert report["status"] == "failed" and not (work / "out" / name / "tiny-unet-rk3588.rknn").exists()
            continue
        target, _, dtype = name.partition("-")
        assert (row["status"], report["status"], report["target"], report["dtype"]) == (
            "ok", "ok", target, dtype or "float16")
        assert row["output_psnr_db"] == report["output_psnr_db"] >= 20
        assert row["artifact_bytes"] == (work / "out" / name / report["artifact"]).stat().st_size > 0
        assert row["estimated_cycles"] == report["cost"]["total_cycles"] > 0
    assert rows["rk3588-w8a8"]["artifact_bytes"] < rows["rk3588"]["artifact_bytes"]
    html = (work / "out" / "summary.html").read_text()
    assert html.count("<tr>") == 5 and html.count('href="rk3588/report.html"') == 1
    assert "[4/4] flip-crash" in result.stdout and "✗ flip-crash failed" in result.stdout


RAY = str(Path(sys.executable).parent / "ray")
W8A8_PSNR_TOLERANCE_DB = 0.1
KILLED_ENTRY = "rk3576"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_once(out: Path, stop: threading.Event, killed: list) -> None:
    """SIGKILL the first build process writing to `out` once a toolkit child runs (as the kernel's OOM
    killer would); `killed` gets its fork server and toolkit children still running 30 s later (none: they
    die with it)."""
    while not stop.wait(0.2):
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if "build" in (proc.info["cmdline"] or []) and str(out) in proc.info["cmdline"]:
                    servers = [c for c in proc.children() if "converter.toolkit.fork_server" in c.cmdline()]
                    toolkit = [job for server in servers for job in server.children()]
                    if toolkit:
                        proc.kill()
                        killed.append(_running_after(servers + toolkit, 30))
                        return
            except psutil.Error:
                continue


def _running_after(procs: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Those of `procs` still running after `seconds`. The killed build's children are orphans: once dead they
    stay zombies until whatever adopted them reaps them, which need not be soon (psutil.wait_procs counts a
    zombie as alive; a busy `make test` once failed on two dead ones)."""
    deadline = time.monotonic() + seconds
    while True:
        running = [p for p in procs if _runs(p)]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.2)


def _runs(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def ray_address():
    """A Ray cluster of this machine (2 CPUs), started on the loopback address for this module's tests."""
    port = _free_port()
    subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                    "--object-store-memory=100000000", "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=300)
    yield f"127.0.0.1:{port}"
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def ray_matrix(local_matrix, ray_address):
    """Entries of the same matrix on the Ray cluster, one build killed once on the way."""
    work, _, _ = local_matrix
    (work / "ray.toml").write_text(RAY_MATRIX)
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_once, args=((work / "ray" / KILLED_ENTRY).resolve(), stop, killed))
    watcher.start()
    try:
        result = rkconvert("matrix", "ray.toml", "--out", str(work / "ray"), "--ray", ray_address,
                           cwd=work, timeout=2 * HANG_GUARD_SECONDS)
    finally:
        stop.set()
        watcher.join()
    return work, result, json.loads((work / "ray" / "summary.json").read_text()), killed


def test_on_ray_the_same_builds_give_the_same_reports_and_a_killed_one_runs_again(local_matrix, ray_matrix):
    _, _, local = local_matrix
    work, result, summary, killed = ray_matrix
    assert result.returncode == 1, result.stderr
    assert killed == [[]], f"no build of {KILLED_ENTRY} was killed, or its toolkit child outlived it: {killed}"
    assert summary["executor"].startswith("ray 127.0.0.1:")
    keys = ("entry", "status", "target", "dtype", "artifact_bytes", "estimated_cycles")
    here = {r["entry"]: r for r in local["entries"]}
    assert [{k: r[k] for k in keys} for r in summary["entries"]] == [{k: here[r["entry"]][k] for k in keys}
                                                                     for r in summary["entries"]]
    assert [r["entry"] for r in summary["entries"]] == ["rk3588-w8a8", "rk3576", "flip-crash"]
    for ray_row in summary["entries"]:
        local_row = here[ray_row["entry"]]
        if ray_row["dtype"] == "float16":
            assert ray_row["output_psnr_db"] == local_row["output_psnr_db"]
        elif ray_row["dtype"] == "w8a8":
            # Ray runs a 1-CPU task's torch on one thread (OMP_NUM_THREADS=1): the recorded calibration
            # inputs round a few ULPs apart from a 2-thread run, which moves quantization ranges a little
            # (0.009 dB seen); a wrong build is tens of dB off.
            assert abs(ray_row["output_psnr_db"] - local_row["output_psnr_db"]) < W8A8_PSNR_TOLERANCE_DB
    report = json.loads((work / "ray" / KILLED_ENTRY / "report.json").read_text())
    assert report["status"] == "ok"


def test_a_fuzz_campaign_fans_out_on_ray(ray_address, tmp_path):
    """`rkconvert fuzz` on the same cluster: each trial a task, as many at once as it has CPUs."""
    result = rkconvert("fuzz", "--graphs", "4", "--first-seed", "0", "--out", "f", "--ray", ray_address, cwd=tmp_path,
                       timeout=HANG_GUARD_SECONDS)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["executor"] == f"ray {ray_address}"
    assert (summary["graphs"], summary["trials"], summary["failures"], summary["probe_errors"]) == (4, 4, 0, 0)
    trials = [json.loads(line) for line in (tmp_path / "f" / "trials.jsonl").read_text().splitlines()]
    assert sorted(t["seed"] for t in trials) == [0, 1, 2, 3]  # seeds 0-3 build (4-36 nodes)


def test_a_hybrid_round_on_ray_builds_what_it_builds_here(local_matrix, ray_address):
    """w8a8 under a gate: one round of two hybrid trials in threads here, then the same round as two Ray
    tasks, both after the same plain build, the matrix's own w8a8 entry (the search itself is tested in
    test_hybrid.py): the same float16 counts tried, the same PSNR for each (the builds are deterministic),
    the same outcome."""
    work, _, _ = local_matrix
    plain = work / "out" / "rk3588-w8a8"
    for out in ("seq", "rounds"):  # the plain build's stages, reused by both searches
        shutil.copytree(plain, work / out)

    def build(out: str, *args: str):
        return rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--dtype", "w8a8", "--resolution",
                         "64", "--layer-report", "off", "--samples", "4", "--trajectories", "1", "--out", out, *args,
                         cwd=work)

    gate = repr(json.loads((plain / "report.json").read_text())["output_psnr_db"] + 3)
    one_round = ("--min-psnr", gate, "--hybrid-max-float16", "1", "--hybrid-parallel", "2", "--hybrid-builds", "2")
    here = build("seq", *one_round)
    assert "rknn rknn-toolkit2 w8a8 build for rk3588 + simulator (reused)" in here.stderr, here.stderr
    on_ray = build("rounds", *one_round, "--ray", ray_address)
    assert on_ray.returncode == here.returncode, on_ray.stderr
    seq, rounds = (json.loads((work / out / "report.json").read_text()) for out in ("seq", "rounds"))
    tried = {t["float16_layers"]: t["psnr_db"] for t in seq["hybrid_trials"]}
    assert len(tried) == 2 and {t["float16_layers"]: t["psnr_db"] for t in rounds["hybrid_trials"]} == tried
    assert rounds.get("hybrid_kept") == seq.get("hybrid_kept")
    assert f"2 builds at once on Ray at {ray_address}" in on_ray.stderr


def test_the_summary_keeps_its_numbers_at_80_columns(local_matrix):
    from rich.console import Console

    from converter.matrix.summary import print_summary

    _, _, summary = local_matrix
    console = Console(width=80, record=True, force_terminal=False)
    print_summary(console, summary["entries"])
    text = console.export_text()
    for row in summary["entries"]:
        if row["output_psnr_db"] is not None:
            assert f"{row['output_psnr_db']:.1f}" in text


KNOWN = {"model": "value", "target": "value", "dtype": "value", "hybrid": "switch", "rebuild": "flag",
         "skip-pass": "multiple", "resolution": "value", "out": "value"}


@pytest.mark.parametrize("text, message", [
    ("[axes]\nmodel = ['a']\ntarget = 'rk3588'\n", r"\[axes\] target: expected a non-empty list"),
    ("[defaults]\nmodle = 'a'\n[axes]\ntarget = ['rk3588']\n", r"\[defaults\]: unknown build option 'modle'"),
    ("[[entry]]\nmodel = 'a'\n", r"\[\[entry\]\] 1: no target"),
    ("[[entry]]\nmodel = 'a'\ntarget = 'rk3588'\nout = 'x'\n", r"'out' is the matrix's to set"),
    ("[[entry]]\nmodel = 'a'\ntarget = 'rk3588'\nhybrid = 'no'\n", r"hybrid = 'no': expected true or false"),
    ("[[entry]]\nmodel = 'a'\ntarget = 'rk3588'\nresolution = [64, 128]\n", r"expected a string or a number$"),
    ("[[entry]]\nmodel = 'a'\ntarget = 'rk3588'\n[[entry]]\nmodel = 'a'\ntarget = 'rk3588'\n",
     "two entries are named 'a-rk3588'"),
    ("[axes]\nmodel = ['a']\n[matrix]\n", "unknown section 'matrix'"),
    ("", r"no builds: give \[axes\] or \[\[entry\]\] tables"),
    ("[axes\n", "not a readable matrix"),
])
def test_a_bad_matrix_is_named_with_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        spec.load(path, KNOWN)


def test_entries_are_the_axes_combinations_then_the_single_ones(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text("[defaults]\nresolution = 64\nhybrid = false\n[axes]\nmodel = ['sd15:mini']\n"
                    "target = ['rk3588', 'rk3562']\n[[entry]]\nmodel = 'demo'\ntarget = 'rk3588'\n"
                    "skip_pass = ['a', 'b']\n")
    entries = spec.load(path, KNOWN)
    assert [e.name for e in entries] == ["rk3588", "rk3562", "demo-rk3588"]
    assert entries[1].arguments() == ["--resolution", "64", "--no-hybrid", "--model", "sd15:mini", "--target", "rk3562"]
    assert entries[2].arguments()[-4:] == ["--skip-pass", "a", "--skip-pass", "b"]


def test_a_missing_matrix_file_is_one_line(tmp_path):
    result = rkconvert("matrix", "nope.toml", cwd=tmp_path)
    assert result.returncode == 2 and error_lines(result) == ["rkconvert: error: nope.toml: no such matrix file"]
    assert not (tmp_path / "build").exists()


def test_a_refused_entry_does_not_show_an_earlier_runs_report(tmp_path):
    """A UNet folder whose weights turn out unreadable only when its build reads them: bad input found
    late, after an earlier run's report of the same name."""
    tiny_unet().save_pretrained(tmp_path / "broken-unet")
    weights = tmp_path / "broken-unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (tmp_path / "m.toml").write_text("[[entry]]\nname = 'gone'\nmodel = 'broken-unet'\ntarget = 'rk3588'\n")
    earlier = tmp_path / "out" / "gone"
    earlier.mkdir(parents=True)
    (earlier / "report.json").write_text(json.dumps({"status": "ok", "output_psnr_db": 70.0}))
    result = rkconvert("matrix", "m.toml", "--out", "out", cwd=tmp_path)
    assert result.returncode == 1
    (row,) = json.loads((tmp_path / "out" / "summary.json").read_text())["entries"]
    assert row["status"] == "bad input" and "not a readable safetensors file" in row["error"]
    assert row["output_psnr_db"] is None
    assert json.loads((earlier / "report.json").read_text())["status"] == "failed"  # this run's, not the earlier


def test_every_entry_is_checked_before_the_first_build_and_all_problems_named(tmp_path):
    (tmp_path / "m.toml").write_text(
        "[defaults]\nresolution = 64\n"
        "[[entry]]\nmodel = 'sd15:mini'\ntarget = 'rk3588'\n"  # fine, and first: it must not be built
        "[[entry]]\nname = 'chip'\nmodel = 'sd15:mini'\ntarget = 'rk9999'\n"
        "[[entry]]\nname = 'size'\nmodel = 'sd15:mini'\ntarget = 'rk3588'\nresolution = 'big'\n"
        "[[entry]]\nname = 'dtype'\nmodel = 'sd15:mini'\ntarget = 'rk3588'\ndtype = 'w8a16'\n"
        "[[entry]]\nname = 'pass'\nmodel = 'sd15:mini'\ntarget = 'rk3576'\nskip-pass = ['nope']\n"
        "[[entry]]\nname = 'file'\nmodel = 'no/such/unet'\ntarget = 'rk3588'\n")
    result = rkconvert("matrix", "m.toml", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert line == "rkconvert: error: m.toml: 5 of 6 entries cannot be built (nothing was built)"
    named = result.stderr.splitlines()[1:]
    assert [row.split(":")[0] for row in named] == ["chip", "size", "dtype", "pass", "file"]
    assert "unknown target 'rk9999'" in named[0] and "'big': a size in pixels" in named[1]
    assert "w8a16 for rk3588" in named[2] and "--skip-pass nope: no such pass" in named[3]
    assert "no/such/unet" in named[4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.toml"]


def test_a_ray_address_nobody_answers_at_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "m.toml").write_text("[[entry]]\nmodel = 'sd15:mini'\ntarget = 'rk3588'\n")
    address = f"127.0.0.1:{_free_port()}"
    result = rkconvert("matrix", "m.toml", "--ray", address, cwd=tmp_path)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert line.startswith(f"rkconvert: error: --ray {address}: no Ray cluster answers there")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.toml"]


def test_the_memory_estimate_follows_the_parts_a_build_is_cut_into():
    """Against SD 1.5 at 512 px as measured (tools/bench_build.py, this machine): 15.0 GB built whole, 9.9 GB in
    2 parts relayed (the default for it as float16), 8.2 GB in turn; as w8a8 in 2 parts the toolkit's step1
    and step2 peaked at 12.4 GB, so its default is 3 parts."""
    from converter.matrix.memory_estimate import peak_bytes

    here = Path(".")
    default, whole = peak_bytes({"model": "sd15"}, here), peak_bytes({"model": "sd15", "parts": 1}, here)
    assert 9.9e9 <= default <= 13e9 and whole >= 15.0e9
    assert 8.2e9 <= peak_bytes({"model": "sd15", "parts-in-turn": True}, here) < default
    assert peak_bytes({"model": "sd15", "parts": "3"}, here) < default
    assert peak_bytes({"model": "sd15", "dtype": "w8a8", "parts": 2}, here) >= 12.4e9
    assert peak_bytes({"model": "sd15", "dtype": "w8a8"}, here) <= 10e9
