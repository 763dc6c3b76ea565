"""The build folder: one sub-folder per stage, each keyed by a hash of everything that made it.

A stage is written into a temporary folder and renamed into place only when complete, so a crash
or Ctrl-C never leaves a half-written stage; a later run whose key matches reuses the stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from converter.common.errors import UserError

STAGE_FILE = "stage.json"
_PACKAGES = ("converter", "graph_passes", "calib_data", "targets")


_ROOT = Path(__file__).resolve().parents[2]  # the checkout: converter/builds/build_dir.py


def sources() -> list[Path]:
    """rkconvert's own Python sources, the ones a stage's output depends on."""
    return [path for package in _PACKAGES for path in sorted((_ROOT / package).rglob("*.py"))]


def code_fingerprint() -> str:
    """Hash of rkconvert's own sources, so a changed pass or exporter invalidates earlier stages."""
    digest = hashlib.sha256()
    for path in sources():
        digest.update(path.relative_to(_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@contextmanager
def undone_on_bad_input(folder: Path):
    """Bad input (UserError) found while a command writes into `folder` leaves nothing behind that the
    command created: the outermost of `folder`'s parents it made goes again."""
    created = None
    for p in (folder, *folder.parents):
        if p.exists():
            break
        created = p
    try:
        yield
    except UserError:
        if created:
            shutil.rmtree(created, ignore_errors=True)
        raise


@dataclass
class StageResult:
    name: str
    path: Path
    key: str
    meta: dict
    seconds: float
    reused: bool

    def summary(self) -> dict:
        return {"name": self.name, "seconds": round(self.seconds, 2), "reused": self.reused}


@dataclass(frozen=True)
class StageOutput:
    """A stage's result as its typed fields (each stage module has one, read from the stage's meta),
    with the record of the stage that made it: a later stage's key chains on it."""

    record: StageResult

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def path(self) -> Path:
        return self.record.path


def finished_stage(build_dir: Path, name: str) -> StageResult:
    """Stage `name` of a finished build (build/finished.py reopens a whole build with it)."""
    folder = build_dir.resolve() / "stages" / name
    try:
        saved = json.loads((folder / STAGE_FILE).read_text())
    except (OSError, ValueError):
        raise UserError(f"{folder}: missing or unreadable; rebuild {build_dir}") from None
    return StageResult(name, folder, saved["key"], saved["meta"], saved["seconds"], True)


class BuildDir:
    def __init__(self, root: Path, rebuild: bool = False):
        self.root = root.resolve()  # stage paths hold wherever they are read from (a Ray node, another cwd)
        self.rebuild = rebuild
        self.stages_dir = self.root / "stages"
        self.logs = self.root / "logs"
        self._code = code_fingerprint()

    def key(self, name: str, material: dict, after: list[StageResult | StageOutput]) -> str:
        blob = json.dumps({"stage": name, "code": self._code, "after": [s.key for s in after],
                           **material}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run(self, name: str, material: dict, after: list[StageResult | StageOutput],
            produce: Callable[[Path], dict]) -> StageResult:
        """Reuse stage `name` if its key matches, else call `produce(tmp_dir)` -> meta and commit it."""
        key = self.key(name, material, after)
        final = self.stages_dir / name
        record = final / STAGE_FILE
        if not self.rebuild and record.is_file():
            saved = json.loads(record.read_text())
            if saved.get("key") == key:
                return StageResult(name, final, key, saved["meta"], saved["seconds"], True)
        tmp = self.stages_dir / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        start = time.monotonic()
        try:
            meta = produce(tmp)
            seconds = time.monotonic() - start
            (tmp / STAGE_FILE).write_text(json.dumps({"key": key, "seconds": seconds, "meta": meta}, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return StageResult(name, final, key, meta, seconds, False)
