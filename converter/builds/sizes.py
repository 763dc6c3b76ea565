"""Several resolutions from one command (`--resolution 256,384,512`): an ordinary build of each size in
OUT/<size>px/, and OUT/report.json indexing them. A `.rknn` has one static shape (RKNN's dynamic shapes are
reported broken for diffusion UNets), so each size is a graph of its own; `release` makes one bundle of
them (release/bundle.py) whose runner picks one with --size."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from converter.builds.request import BuildRequest
from converter.reports.build_report import BuildReport, SizeEntry, SizesIndex


def folder_name(size: int) -> str:
    return f"{size}px"


def each(req: BuildRequest) -> list[BuildRequest]:
    """One single-size build request per size, each in its own folder under --out."""
    return [replace(req, resolution=size, resolutions=(), out=req.out / folder_name(size)) for size in req.resolutions]


def index(req: BuildRequest, reports: list[BuildReport]) -> SizesIndex:
    """OUT/report.json of the sizes' builds (`reports`, in --resolution's order)."""
    first = reports[0]
    return SizesIndex(
        status="ok" if all(r.ok for r in reports) else "failed", model=first.model, target=first.target,
        dtype=first.dtype, command=req.command,
        sizes={str(r.resolution): SizeEntry(folder_name(r.resolution), r.status,
                                            r.delivered.artifact_bytes if r.delivered else None, r.psnr_db,
                                            r.images.summary if r.images else None) for r in reports})


def write_index(req: BuildRequest, reports: list[BuildReport]) -> Path:
    index(req, reports).write(req.report_path)
    return req.report_path
