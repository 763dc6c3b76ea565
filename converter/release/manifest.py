"""The manifest of a build's bundle (converter/board/manifest.py owns its form): what the bundle is, from
the .rknn files' own accounts, what it needs on the board, its proof of accuracy, and the sha256 of every
other file in it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from converter import __version__
from converter.board.manifest import SCHEMA, Accuracy, Check, FileEntry, ForSize, Manifest, Pipeline, Run, Tensor
from converter.common.digest import file_chunks, sha256
from converter.reports.build_report import BuildReport
from converter.toolkit.rknn_file import RknnFile

RKNN = "model.rknn"


def rknn_names(count: int) -> list[str]:
    """The .rknn files of a bundle, in run order: model.rknn, or a build's parts (--parts)."""
    return [RKNN] if count == 1 else [f"model.part{i}.rknn" for i in range(1, count + 1)]


def run(rknn: str, declared: RknnFile, **pipeline_model) -> Run:
    """The runner's entry for an .rknn named `rknn` in the bundle, as the file declares itself (a pipeline
    model's: with its `accuracy` and `build`)."""
    return Run(rknn, [Tensor(**t) for t in declared.inputs], [Tensor(**t) for t in declared.outputs],
               declared.op_counts, declared.constant_bytes, **pipeline_model)


def make(report: BuildReport, declared: list[RknnFile], files: dict[str, Path | bytes], check: Check,
         pipeline: Pipeline | None) -> Manifest:
    """The manifest for a build's `report`, the artifacts' own accounts `declared` (one per .rknn, in run
    order), the bundle's other `files` (name in the bundle -> file or bytes), its check sample and, for a
    model that draws, what the board's text-to-image loop needs (`pipeline`)."""
    first, accuracy = declared[0], report.accuracy
    runs = [run(name, d) for name, d in zip(rknn_names(len(declared)), declared)]
    return Manifest(
        schema=SCHEMA, rkconvert_version=__version__, target=first.target, toolkit_version=first.toolkit_version,
        compiler_version=first.compiler_version, librknnrt_version=first.toolkit_version, dtype=report.dtype,
        model=report.model, files=file_entries(files),
        first=ForSize(
            resolution=report.resolution, rknn=runs[0].rknn, inputs=runs[0].inputs, outputs=runs[-1].outputs,
            op_counts=dict(sum((Counter(d.op_counts) for d in declared), Counter())),
            constant_bytes=dict(sum((Counter(d.constant_bytes) for d in declared), Counter())),
            parts=runs if len(runs) > 1 else None, host_programs=report.delivered.host_programs,
            accuracy=Accuracy(accuracy.psnr_db, accuracy.cosine, accuracy.max_abs, report.check_inputs, report.min_psnr),
            images=report.images.summary if report.images else None, build_command=report.command, check=check,
            pipeline=pipeline, build=""),
        loras=report.loras or [], vae=report.vae)


def file_entries(files: dict[str, Path | bytes]) -> dict[str, FileEntry]:
    """Every bundle file's sha256 and size, by name."""
    return {name: FileEntry(sha256([c] if isinstance(c, bytes) else file_chunks(c)),
                            len(c) if isinstance(c, bytes) else c.stat().st_size) for name, c in sorted(files.items())}
