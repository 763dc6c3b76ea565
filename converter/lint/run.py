"""`rkconvert lint` on a request: the model exported as `build` exports it (the stage is shared), then
checked against the target's pass list."""

from __future__ import annotations

from converter.builds import plan
from converter.builds.build_dir import BuildDir, undone_on_bad_input
from converter.builds.request import BuildRequest
from converter.builds.stage_run import StageRunner
from converter.builds.stages import export as export_stage
from converter.common import onnx_files
from converter.common.progress import Progress
from converter.lint.check import LintResult, lint


def lint_model(req: BuildRequest, progress: Progress) -> tuple[LintResult, list[str]]:
    """The findings, and the passes they were checked against."""
    names = plan.pass_names(req)
    with undone_on_bad_input(req.out):
        exported = export_stage.stage(StageRunner(BuildDir(req.out, req.rebuild), progress), req.source, req.resolution)
    return lint(onnx_files.load_lazy(exported.onnx), req.chip, names), names
