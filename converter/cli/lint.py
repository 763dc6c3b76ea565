"""`rkconvert lint`."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from converter.builds.request import BuildRequest
from converter.cli.groups import LINT_GROUPS
from converter.cli.options import request_options


@click.command(epilog="Exit status: 0 nothing left without a fix, 1 something is, 2 bad input.")
@request_options(*LINT_GROUPS)
def lint(request: BuildRequest):
    """List what --target would refuse, run on the CPU, crash on or convert wrongly in MODEL, without building.

    Each finding names the node and the pass that removes it; the target's pass list (as adjusted by
    --passes / --enable-pass / --skip-pass) is run and the graph checked again, and anything left has
    no fix in that list.
    """
    from converter.common.progress import Progress
    from converter.lint.report import print_lint
    from converter.lint.run import lint_model

    result, names = lint_model(request, Progress(Console(stderr=True, highlight=False)))
    print_lint(Console(), result, request.chip, names)
    sys.exit(1 if result.remaining else 0)
