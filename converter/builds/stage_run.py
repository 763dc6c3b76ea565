"""The stages one command runs over a build folder: each reused when its key matches, with progress."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from converter.builds.build_dir import BuildDir, StageOutput, StageResult
from converter.common import memory
from converter.common.progress import Progress


class StageRunner:
    def __init__(self, build_dir: BuildDir, progress: Progress):
        self.build_dir = build_dir
        self.progress = progress
        self.ran: list[StageResult] = []  # in the order they ran or were reused: report.json's `stages`

    @property
    def logs(self) -> Path:
        return self.build_dir.logs

    def run(self, name: str, what: str, material: dict, after: list[StageResult | StageOutput],
            produce: Callable[[Path], dict], progress: Progress | None = None) -> StageResult:
        """Stage `name` through the build folder (reused when its key matches), shown on `progress` (the
        runner's own unless given); memory handed back after."""
        shown = progress or self.progress

        def produce_with_progress(tmp: Path) -> dict:
            with shown.stage(name, what):
                return produce(tmp)

        result = self.build_dir.run(name, material, after, produce_with_progress)
        memory.release()
        if result.reused:
            shown.reused(name, what)
        self.ran.append(result)
        return result
