"""Several resolutions from one command (`--resolution 256,384,512`): an ordinary build of each size in
OUT/<size>px/, and OUT/report.json indexing them. A `.rknn` has one static shape (RKNN's dynamic shapes are
reported broken for diffusion UNets), so each size is a graph of its own; `release` makes one bundle of
them (release/bundle.py) whose runner picks one with --size."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from converter.build.request import BuildRequest

KEY = "sizes"  # the index report's key: size -> that build's folder and figures


def folder_name(size: int) -> str:
    return f"{size}px"


def each(req: BuildRequest) -> list[BuildRequest]:
    """One single-size build request per size, each in its own folder under --out."""
    return [replace(req, resolution=size, resolutions=(), out=req.out / folder_name(size)) for size in req.resolutions]


def index(req: BuildRequest, reports: list[dict]) -> dict:
    """OUT/report.json of the sizes' builds (`reports`, in --resolution's order)."""
    first = reports[0]
    return {"status": "ok" if all(r["status"] == "ok" for r in reports) else "failed", "model": first["model"],
            "target": first["target"], "dtype": first["dtype"], "command": req.command,
            KEY: {str(r["resolution"]): {"folder": folder_name(r["resolution"]), "status": r["status"],
                                         "artifact_bytes": r.get("artifact_bytes"),
                                         "output_psnr_db": r.get("output_psnr_db"),
                                         "images": (r.get("images") or {}).get("summary")} for r in reports}}


def write_index(req: BuildRequest, reports: list[dict]) -> Path:
    path = req.report_path
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(index(req, reports), indent=2) + "\n")
    tmp.rename(path)
    return path
