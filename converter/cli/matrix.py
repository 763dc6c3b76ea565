"""`rkconvert matrix`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from converter.cli.build import build
from converter.cli.groups import BUILD_GROUPS, RAY
from converter.cli.options import option_kinds, parse_request
from converter.common.errors import UserError


@click.command(epilog="Exit status: 0 every entry built within its gates, 1 some entry did not, 2 bad input "
                     "(a matrix file that cannot be read).")
@click.argument("matrix_path", metavar="MATRIX.toml", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for the entries' build folders, logs/ and summary.json / summary.html "
                   "(default: build/matrix-<file name>/). Stages found there with unchanged inputs are reused.")
@RAY
def matrix(matrix_path, out, ray_address):
    """Build every entry of MATRIX.toml, each an ordinary `rkconvert build` in its own process and
    folder (one at a time, or on Ray); then one summary: status, PSNR, size, estimated cost and time.
    A failed entry (toolkit crash, refusal, accuracy gate) is a row; the others go on.

    \b
    [defaults]          # build options every entry gets, named as in `build --help`
    resolution = 64
    [axes]              # every combination is an entry
    model = ["sd15:mini", "bk-sdm-tiny:mini"]
    target = ["rk3588", "rk3576"]
    dtype = ["float16", "w8a8"]
    [[entry]]           # more entries, one by one
    model = "demo"
    target = "rk3588"
    """
    from converter.matrix.command import run_matrix

    rows = run_matrix(matrix_path, out, option_kinds(build), _problem, Console(highlight=False, soft_wrap=True),
                      ray_address)
    sys.exit(0 if all(r["status"] == "ok" for r in rows) else 1)


def _problem(arguments: list[str]) -> str | None:
    """What keeps `rkconvert build ARGUMENTS` from starting, or None: its option values, its model and
    target, and what the build refuses before it writes anything (passes, the dtype for the target, ...)."""
    from converter.builds import plan

    try:
        context = build.make_context("build", list(arguments))
        plan.check(parse_request(BUILD_GROUPS, context.params))
    except click.UsageError as e:
        return e.format_message()
    except UserError as e:
        return str(e)
    return None
