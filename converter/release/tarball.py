"""Reproducible .tar.gz writing, and reading that refuses unsafe members before anything is written.

Reproducible: members sorted, mtime 0, owner root:root with no names, modes 0644 (0755 for
directories), and a gzip header without file name or time, so one build folder always gives the
same bytes.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from converter.common.errors import UserError

CHUNK = 1 << 20


def write(out: Path, members: dict[str, Path | bytes]) -> None:
    """`out` holding `members` (archive name -> file or bytes), written to a temporary name first."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                  compresslevel=6) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in _with_parents(members):
                content = members.get(name)
                info = tarfile.TarInfo(name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if content is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                elif isinstance(content, bytes):
                    info.size, info.mode = len(content), 0o644
                    tar.addfile(info, io.BytesIO(content))
                else:
                    info.size, info.mode = content.stat().st_size, 0o644
                    with open(content, "rb") as f:
                        tar.addfile(info, f)
        tmp.rename(out)
    finally:
        tmp.unlink(missing_ok=True)


def _with_parents(members: dict[str, Path | bytes]) -> list[str]:
    """Member names and every directory above them, sorted."""
    names = set(members)
    for name in members:
        names.update(str(p) for p in PurePosixPath(name).parents if str(p) != ".")
    return sorted(names)


def unsafe(info: tarfile.TarInfo) -> str | None:
    """Why a member must not be unpacked, or None."""
    path = PurePosixPath(info.name)
    if path.is_absolute() or info.name.startswith("/"):
        return "absolute path"
    if ".." in path.parts:
        return "path with '..'"
    if info.issym() or info.islnk():
        return f"link to {info.linkname}"
    if not (info.isfile() or info.isdir()):
        return "device, fifo or other special file"
    return None


def safe_members(bundle: Path) -> list[tarfile.TarInfo]:
    """Every member of `bundle`, after checking them all (UserError naming the first unsafe one)."""
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            members = tar.getmembers()
    except (OSError, tarfile.TarError, EOFError) as e:
        raise UserError(f"{bundle}: not a readable .tar.gz ({e})") from None
    for info in members:
        why = unsafe(info)
        if why:
            raise UserError(f"{bundle}: member {info.name!r} refused: {why}")
    return members


def chunks(bundle: Path) -> Iterator[tuple[tarfile.TarInfo, Iterator[bytes]]]:
    """(member, its bytes in chunks) for every regular file, in archive order; call safe_members first."""
    with tarfile.open(bundle, "r:gz") as tar:
        for info in tar:
            if info.isfile():
                f = tar.extractfile(info)
                yield info, iter(lambda: f.read(CHUNK), b"")
