"""manifest.json of a release bundle: what the bundle is (from the .rknn itself), what it needs on the
board, its proof of accuracy, and the sha256 of every other file in it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from converter import __version__
from converter.common.digest import file_chunks, sha256

SCHEMA = "rkconvert-bundle/1"
NAME = "manifest.json"
RKNN = "model.rknn"
# What the manifest says of each .rknn, as the file itself declares it (verify compares them).
PART_KEYS = ("inputs", "outputs", "op_counts", "constant_bytes")
# key -> type every manifest has; verify checks them.
REQUIRED = {"schema": str, "rkconvert_version": str, "target": str, "toolkit_version": str, "compiler_version": str,
            "librknnrt_version": str, "dtype": str, "model": str, "rknn": str, "inputs": list, "outputs": list,
            "host_programs": list, "accuracy": dict, "build_command": (str, type(None)), "check": dict,
            "pipeline": (dict, type(None)), "files": dict}


def rknn_names(count: int) -> list[str]:
    """The .rknn files of a bundle, in run order: model.rknn, or a build's parts (--parts)."""
    return [RKNN] if count == 1 else [f"model.part{i}.rknn" for i in range(1, count + 1)]


def make(report: dict, declared: list[dict], files: dict[str, Path | bytes], check: dict, pipeline: dict | None) -> dict:
    """The manifest for a build's `report`, the artifacts' own accounts `declared` (converter/toolkit/rknn_file.py; one
    per .rknn, in run order), the bundle's other `files` (name in the bundle -> file or bytes), the check
    tensors' names and, for a model that draws, what the board's text-to-image loop needs (`pipeline`).
    A model in parts lists them under `parts`, each with the tensors it takes and hands on by name."""
    images = report.get("images")
    first, last = declared[0], declared[-1]
    names = rknn_names(len(declared))
    return {
        "schema": SCHEMA,
        "rkconvert_version": __version__,
        "target": first["target"],
        "toolkit_version": first["toolkit_version"],
        "compiler_version": first["compiler_version"],
        # A model built by one toolkit fails on another runtime ("Invalid RKNN model version 6"; a 2.3.0
        # model crashed on librknnrt 2.3.2): the board's librknnrt must be the toolkit's version.
        "librknnrt_version": first["toolkit_version"],
        "dtype": report["dtype"],
        "model": report["model"],
        "resolution": report.get("resolution"),
        "rknn": names[0],
        "inputs": first["inputs"],
        "outputs": last["outputs"],
        "op_counts": dict(sum((Counter(d["op_counts"]) for d in declared), Counter())),
        "constant_bytes": dict(sum((Counter(d["constant_bytes"]) for d in declared), Counter())),
        "parts": [{"rknn": name, **{k: d[k] for k in PART_KEYS}} for name, d in zip(names, declared)]
        if len(declared) > 1 else None,
        "host_programs": report.get("host_programs", []),
        "accuracy": {k: report.get(k) for k in ("output_psnr_db", "output_cosine", "output_max_abs", "check_inputs",
                                                "min_psnr")},
        "images": images["summary"] if images else None,
        "build_command": report.get("command"),
        "build": "",  # the build folder of this model, under the folder `run.py --simulate` is given
        "check": check,
        "pipeline": pipeline,
        "files": file_entries(files),
    }


def file_entries(files: dict[str, Path | bytes]) -> dict[str, dict]:
    """The manifest's `files`: every bundle file's sha256 and size, by name."""
    return {name: {"sha256": sha256([c] if isinstance(c, bytes) else file_chunks(c)),
                   "bytes": len(c) if isinstance(c, bytes) else c.stat().st_size} for name, c in sorted(files.items())}


def runs(made: dict) -> list[dict]:
    """What the runner loads, in order ({"rknn", "inputs", "outputs", "op_counts", ...}): the parts, or the one
    .rknn described at the top level."""
    return made.get("parts") or [{"rknn": made["rknn"], **{k: made[k] for k in PART_KEYS}}]


def all_runs(made: dict) -> list[dict]:
    """Every .rknn the bundle runs (its UNet's, its pipeline parts', of every size), each once."""
    found = {}
    for one in [made, *(made.get("sizes") or {}).values()]:
        for run in [*runs({**made, **one}), *npu_parts(one).values()]:
            found.setdefault(run["rknn"], run)
    return list(found.values())


def npu_parts(made: dict) -> dict[str, dict]:
    """The pipeline parts the bundle runs on the NPU beside the UNet: name -> {"rknn", "inputs", "outputs", ...}."""
    return (made.get("pipeline") or {}).get("npu") or {}


def part_run(name: str, declared: dict, accuracy: dict) -> dict:
    """A pipeline part's entry under `pipeline.npu`: its .rknn as the file declares itself, its accuracy."""
    return {"rknn": f"npu/{name}.rknn", **{k: declared[k] for k in PART_KEYS}, "accuracy": accuracy, "build": ""}


def problems(manifest: object) -> list[str]:
    """What makes `manifest` not one of ours (missing keys, wrong types); [] when it is."""
    if not isinstance(manifest, dict):
        return [f"{NAME}: not a JSON object"]
    found = [f"{NAME}: no {key!r}" for key in REQUIRED if key not in manifest]
    found += [f"{NAME}: {key!r} is {type(manifest[key]).__name__}" for key, kind in REQUIRED.items()
              if key in manifest and not isinstance(manifest[key], kind)]
    if manifest.get("schema") not in (None, SCHEMA):
        found.append(f"{NAME}: schema {manifest['schema']!r}, this rkconvert reads {SCHEMA!r}")
    files = manifest.get("files")
    for name, entry in (files.items() if isinstance(files, dict) else ()):
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("bytes"), int)):
            found.append(f"{NAME}: files[{name!r}] needs sha256 and bytes")
    return found
