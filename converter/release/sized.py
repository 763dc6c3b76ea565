"""One bundle of several sizes (`build --resolution A,B,...`): the first size's bundle as it would be alone,
each other size's own files under `<size>px/`, and the manifest's `sizes` saying, per size, which files
the runner takes (`run.py --size`). What does not depend on the size is shipped once: the runner, the
tokenizer, the scheduler config, and the text encoder (its ONNX and its .rknn)."""

from __future__ import annotations

from pathlib import Path

from converter.pipeline.sizes import folder_name
from converter.release.manifest import file_entries

# Bundle names shared by every size; the text encoder's input (77 token ids) has no resolution.
SHARED = ("board/", "tokenizer/", "scheduler/", "cpu/text_encoder.onnx", "npu/text_encoder.rknn")
# What the runner reads per size (besides `files`).
SIZE_KEYS = ("resolution", "rknn", "inputs", "outputs", "op_counts", "constant_bytes", "parts", "host_programs",
             "accuracy", "images", "build_command", "check", "pipeline", "build")


def _shared(name: str) -> bool:
    return name.startswith(SHARED)


def _moved(made: dict, prefix: str, build: str, first: dict | None) -> dict:
    """`made` (one size's manifest) with its own files under `prefix`, its shared ones `first`'s (None: it is the
    first), and its build folder `build`."""
    def at(name: str) -> str:
        return name if _shared(name) else prefix + name

    moved = {**made, "rknn": at(made["rknn"]), "host_programs": [at(p) for p in made["host_programs"]],
             "check": {**made["check"], "folder": at(made["check"]["folder"])}, "build": build}
    if made.get("parts"):
        moved["parts"] = [{**part, "rknn": at(part["rknn"])} for part in made["parts"]]
    if made.get("pipeline"):
        pipe = made["pipeline"]
        theirs = ((first or {}).get("pipeline") or {}).get("npu", {})
        moved["pipeline"] = {**pipe, "cpu": {name: at(path) for name, path in pipe["cpu"].items()},
                             "npu": {name: theirs.get(name) if _shared(run["rknn"]) and name in theirs
                                     else {**run, "rknn": at(run["rknn"]), "build": build}
                                     for name, run in pipe["npu"].items()}}
    return moved


def combined(build_dir: Path, each: dict[int, tuple[dict, dict]]) -> tuple[dict, dict]:
    """(manifest, files) of one bundle from each size's (manifest, files), in --resolution's order."""
    top, files, sizes = None, {}, {}
    for size, (made, made_files) in each.items():
        prefix = "" if top is None else f"{folder_name(size)}/"
        moved = _moved(made, prefix, folder_name(size), top)
        for name, path in made_files.items():
            files.setdefault(name if _shared(name) else prefix + name, path)  # a shared name: the first size's
        top = top or moved
        sizes[str(size)] = {key: moved.get(key) for key in SIZE_KEYS}
    return {**top, "sizes": sizes, "files": file_entries(files)}, files
