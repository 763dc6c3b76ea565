"""One bundle of several sizes (`build --resolution A,B,...`): the first size's bundle as it would be alone,
each other size's own files under `<size>px/`, and the manifest's `sizes` saying, per size, which files
the runner takes (`run.py --size`). What does not depend on the size is shipped once: the runner, the
tokenizer, the scheduler config, and the text encoder (its ONNX and its .rknn)."""

from __future__ import annotations

from dataclasses import replace

from converter.board.manifest import Check, ForSize, Manifest
from converter.builds.sizes import folder_name
from converter.release.manifest import file_entries

# Bundle names shared by every size; the text encoder's input (77 token ids) has no resolution.
SHARED = ("board/", "tokenizer/", "scheduler/", "cpu/text_encoder.onnx", "npu/text_encoder.rknn")


def _shared(name: str) -> bool:
    return name.startswith(SHARED)


def _moved(made: ForSize, prefix: str, build: str, first: ForSize | None) -> ForSize:
    """`made` (one size's) with its own files under `prefix`, its shared ones `first`'s (None: it is the first),
    and its build folder `build`."""
    def at(name: str) -> str:
        return name if _shared(name) else prefix + name

    pipeline = made.pipeline
    if pipeline:
        theirs = first.npu_models() if first else {}
        pipeline = replace(pipeline, cpu={name: at(path) for name, path in pipeline.cpu.items()},
                           npu={name: theirs[name] if _shared(run.rknn) and name in theirs else run.moved(at, build)
                                for name, run in pipeline.npu.items()})
    return replace(made, rknn=at(made.rknn), host_programs=[at(p) for p in made.host_programs],
                   check=Check(at(made.check.folder), made.check.inputs, made.check.outputs), build=build,
                   parts=[part.moved(at) for part in made.parts] if made.parts else None, pipeline=pipeline)


def combined(each: dict[int, tuple[Manifest, dict]]) -> tuple[Manifest, dict]:
    """(manifest, files) of one bundle from each size's (manifest, files), in --resolution's order."""
    top, files, sizes = None, {}, {}
    for size, (made, made_files) in each.items():
        prefix = "" if top is None else f"{folder_name(size)}/"
        moved = _moved(made.first, prefix, folder_name(size), top.first if top else None)
        for name, path in made_files.items():
            files.setdefault(name if _shared(name) else prefix + name, path)  # a shared name: the first size's
        top = top or replace(made, first=moved)
        sizes[str(size)] = moved
    return replace(top, sizes=sizes, files=file_entries(files)), files
