"""`rkconvert build`."""

from __future__ import annotations

import shlex

import click
from rich.console import Console

from converter.builds.request import BuildRequest
from converter.cli.exits import EXIT_CODES
from converter.cli.groups import BUILD_GROUPS, DIAGNOSE_GROUPS
from converter.cli.options import arguments, request_options
from converter.common.errors import BuildFailed
from converter.reports.build_report import BuildReport


@click.command(epilog=EXIT_CODES)
@request_options(*BUILD_GROUPS)
def build(request: BuildRequest):
    """Build MODEL into a .rknn for --target and check it against ONNX Runtime.

    Stages: export (trace to static-shape ONNX, opset 17) -> passes (the target's graph rewrites) ->
    reference (ONNX Runtime outputs on check inputs) -> rknn (rknn-toolkit2 build and simulator run,
    in a child process) -> layers (every layer the simulator dumps against ONNX Runtime) -> for models
    that can draw, pipeline-models (text encoder and VAE decoder to ONNX, each then built for the NPU as
    a graph of its own in --out/npu/<part>/, see --npu-models) and images (text to image through ONNX
    Runtime and through the .rknn models in the simulator) -> report.json + report.html. The .rknn,
    the reports and any host programs (small ONNX models computing inputs such as t_emb from the
    timestep on the board's CPU) land in --out.
    """
    run(request)


def run(request: BuildRequest) -> None:
    """The build (of each size, --resolution A,B,...), its summary on the terminal; a toolkit failure names the
    diagnose that takes it from there."""
    from converter.builds import sizes

    if not request.resolutions:
        _run_one(request)
        return
    reports = [_run_one(one) for one in sizes.each(request)]
    index = sizes.write_index(request, reports)
    built = ", ".join(f"{r.resolution} px" for r in reports)
    Console().print(f"[bold]sizes[/]  {built}: one build each under {request.out}/ (index: {index}); "
                    f"`rkconvert release {request.out}` bundles them all")


def _run_one(request: BuildRequest) -> BuildReport:
    from converter.builds.builder import build as run_build
    from converter.common.progress import Progress
    from converter.reports.report import print_summary

    try:
        report = run_build(request, Progress(Console(stderr=True, highlight=False)))
    except BuildFailed as e:
        if e.ending is not None:  # the toolkit died, refused or errored: same folder, its stages are reused
            again = arguments(request, DIAGNOSE_GROUPS, leave_out=("rebuild",))
            e.details = (*e.details, f"find out why: {shlex.join(['rkconvert', 'diagnose', *again])}")
        raise
    print_summary(Console(), report.to_json(), request.report_path)
    return report
