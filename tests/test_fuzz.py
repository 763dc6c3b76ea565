"""`rkconvert fuzz`: seeded graphs that ONNX Runtime runs, a failure found, diagnosed, filed and recognised."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest
from conftest import error_lines, rkconvert

from converter.common import onnx_runtime
from converter.fuzz import corpus
from converter.fuzz.graphs import random_graph
from converter.fuzz.patterns import PATTERNS
from converter.fuzz.trial import Trial

# Seed 50 upsamples with a cubic Resize: rknn-toolkit2 2.5.0 dies (catalogue cubic-resize), reduced to that
# Resize in a few builds; seed 49 builds. About 15 s on 2 cores.
FAILING_SEED = 50
FUZZ_HANG_GUARD_SECONDS = 600


def test_a_seed_makes_one_graph_that_onnx_runtime_runs():
    seen = set()
    for seed in range(120):
        graph = random_graph(seed)
        assert graph.model.SerializeToString() == random_graph(seed).model.SerializeToString()
        onnx.checker.check_model(graph.model, full_check=True)
        session = onnx_runtime.session(graph.model)
        rng = np.random.default_rng(seed)
        feed = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in session.get_inputs()}
        (out,) = onnx_runtime.run(session, feed).values()
        assert np.isfinite(out).all() and np.abs(out).max() < 6e4  # within float16's range
        seen.update(p.split("/")[0].split("+")[0] for p in graph.patterns)
    seen = {"conv" if s.startswith("conv") else s for s in seen}
    assert seen == {p.name for p in PATTERNS} - {"feed_forward"} | {"geglu", "gelu_mlp"}  # every pattern, variants


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    result = rkconvert("fuzz", "--target", "rk3588", "--seeds", f"{FAILING_SEED - 1},{FAILING_SEED}",
                       "--out", "f", cwd=work, timeout=FUZZ_HANG_GUARD_SECONDS)
    return work / "f", result, json.loads((work / "f" / "summary.json").read_text())


def test_a_failure_is_diagnosed_filed_and_recognised(campaign):
    out, result, summary = campaign
    assert result.returncode == 0, result.stderr
    assert (summary["graphs"], summary["trials"], summary["failed_trials"], summary["failures"]) == (2, 2, 1, 1)
    assert (summary["diagnosed"], summary["diagnose_errors"], summary["probe_errors"]) == (1, 0, 0)
    (found,) = summary["classes"]
    assert found["signature"] == {"kind": "crash", "phase": "build()", "message": "", "last_rule": None}
    assert found["trials"] == [f"{FAILING_SEED}-float16"] and found["repro_nodes"] < found["source_nodes"]
    assert found["known"] == "cubic-resize"
    diagnosis = json.loads((out / "corpus" / found["key"] / "diagnosis.json").read_text())
    assert diagnosis["reduction"]["reproduced"] and diagnosis["repro"]["ops"] == {"Resize": 1}
    assert {p.name for p in (out / "corpus" / found["key"]).iterdir()} >= {
        "repro.onnx", "repro.py", "repro-input.npz", "diagnosis.json", "source.onnx", "entry.json", "reduce.log"}
    lines = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert [(t["seed"], t["corpus"]) for t in lines] == [(FAILING_SEED - 1, None), (FAILING_SEED, found["key"])]
    assert not (out / "trials" / f"{FAILING_SEED - 1}-float16").exists()  # a graph that built leaves nothing
    assert f"seed {FAILING_SEED} float16" in result.stdout and "1 distinct failures" in result.stdout


def test_the_same_failure_again_is_counted_not_filed_twice(campaign, tmp_path):
    out, _, summary = campaign
    line = json.loads((out / "trials.jsonl").read_text().splitlines()[1])
    first = Trial.from_json({k: v for k, v in line.items() if k != "corpus"})
    shutil.copytree(out / "corpus", tmp_path / "corpus")
    again = replace(first, seed=999)
    assert corpus.file(tmp_path / "corpus", again) == summary["classes"][0]["key"]
    entry = json.loads((tmp_path / "corpus" / summary["classes"][0]["key"] / corpus.ENTRY).read_text())
    assert entry["trials"] == [f"{FAILING_SEED}-float16", "999-float16"]
    assert len(list((tmp_path / "corpus").iterdir())) == 1


def test_a_dtype_the_target_does_not_build_is_refused(tmp_path):
    result = rkconvert("fuzz", "--target", "rk3588", "--dtype", "w8a16", "--graphs", "1", "--out", "f", cwd=tmp_path)
    assert result.returncode == 2 and error_lines(result) == [
        "rkconvert: error: --dtype w8a16: rk3588 builds float16, w8a8"]
    assert not (tmp_path / "f").exists()

