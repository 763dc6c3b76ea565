"""The fuzzer's corpus: one folder per distinct failure, named by its reduced repro's signature.

Two trials found the same failure when their repros fail the same way (Failure.way: class, call,
message with names and numbers blanked) after the same last rewrite rule of the toolkit; for an accuracy
loss, which has no rule of its own, with the same op types. A quantized build compiles the graph in
hybrid_quantization_step1() and step2() where a float16 build does in build(): one call here. The corpus keeps the
first one's diagnosis (repro.onnx, repro.py, its inputs, diagnosis.json) and the graph it came from, and
counts the others in entry.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from converter.fuzz.trial import DIAGNOSIS, GRAPH, Trial
from converter.toolkit.failure import Failure

ENTRY = "entry.json"
_COMPILING = {"hybrid_quantization_step1()": "build()", "hybrid_quantization_step2()": "build()"}


def signature(diagnosis: dict) -> dict:
    failure = Failure.from_json({k: v for k, v in diagnosis["repro"]["failure"].items() if k != "meaning"})
    kind, phase, message = failure.way()
    sig = {"kind": kind, "phase": _COMPILING.get(phase, phase), "message": message, "last_rule": failure.last_rule}
    return {**sig, "ops": sorted(diagnosis["repro"]["ops"])} if kind == "accuracy" else sig


def key(sig: dict) -> str:
    return hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:12]


def file(corpus: Path, trial: Trial) -> str | None:
    """`trial`'s diagnosis filed under its signature (a new folder when the first of its kind): the key."""
    if not trial.diagnosed:
        return None
    found = Path(trial.folder)
    diagnosis = json.loads((found / DIAGNOSIS / "diagnosis.json").read_text())
    sig = signature(diagnosis)
    name = key(sig)
    folder = corpus / name
    if (folder / ENTRY).exists():
        entry = json.loads((folder / ENTRY).read_text())
        entry["trials"].append(f"{trial.seed}-{trial.dtype}")
    else:
        work = corpus / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(found / DIAGNOSIS, work)
        shutil.copyfile(found / GRAPH, work / "source.onnx")
        work.rename(folder)
        entry = {"signature": sig, "failure": diagnosis["failure"], "known": (diagnosis["known"] or {}).get("id"),
                 "repro_nodes": diagnosis["reduction"].get("nodes_after"), "source_nodes": trial.nodes,
                 "patterns": list(trial.patterns), "trials": [f"{trial.seed}-{trial.dtype}"]}
    partial = folder / f".{ENTRY}.partial"
    partial.write_text(json.dumps(entry, indent=1))
    partial.replace(folder / ENTRY)
    return name
