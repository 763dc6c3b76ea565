"""A stage of a build through its build folder: reused when its key matches, with progress."""

from __future__ import annotations

from pathlib import Path

from converter.pipeline.build_dir import BuildDir, StageResult
from converter.pipeline.request import BuildRequest
from converter.common import memory
from converter.common.progress import Progress


def run_stage(req: BuildRequest, build_dir: BuildDir, progress: Progress, name: str, what: str,
              material: dict, after: list[StageResult], produce) -> StageResult:
    """Stage `name` through BuildDir (reused when its key matches), with progress; memory handed back after."""
    def produce_with_progress(tmp: Path) -> dict:
        with progress.stage(name, what):
            return produce(tmp)

    result = build_dir.run(name, material, after, produce_with_progress)
    memory.release()
    if result.reused:
        progress.reused(name, what)
    req.stages.append(result)
    return result
