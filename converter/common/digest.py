"""sha256 of files read in chunks: bundles' manifests, the demo's weights, stage keys over weight files."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def sha256(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def file_chunks(path: Path, size: int = 1 << 20) -> Iterable[bytes]:
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(size), b"")


def file_sha256(path: Path) -> str:
    return sha256(file_chunks(path))
