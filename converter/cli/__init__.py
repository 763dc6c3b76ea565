"""The `rkconvert` command line: one short file per command, naming the option groups it takes
(groups.py); the work is done by the verbs under converter/."""

from __future__ import annotations

import os
import sys

# transformers' and diffusers' own warnings (a missing torchvision or accelerate: neither is needed here)
# and their weight-loading progress bars would bury rkconvert's output; an environment that sets these
# keeps its own choice.
for _name, _value in (("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"),
                      ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
    os.environ.setdefault(_name, _value)

import click
from rich.console import Console

from converter import __version__
from converter.cli import build, calib, compare, diagnose, fuzz, generate, lint, matrix, quantize, release
from converter.cli.exits import EXIT_CODES
from converter.common.errors import BuildFailed, UserError


class OneLineErrors(click.Group):
    """Every failure ends as `rkconvert: error: <one line>` and a non-zero exit, never a traceback."""

    def main(self, args=None, **kwargs):
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        try:
            return super().main(args=args, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort:
            console.print("rkconvert: interrupted")
            sys.exit(130)
        except click.UsageError as e:
            console.print(f"rkconvert: error: {e.format_message()}", markup=False)
            sys.exit(2)
        except (UserError, BuildFailed) as e:
            console.print(f"rkconvert: error: {e}", markup=False)
            for line in getattr(e, "details", ()):
                console.print(line, markup=False, style="dim")
            sys.exit(e.exit_code)


@click.group(cls=OneLineErrors, epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="rkconvert")
def main():
    """Convert diffusion UNets into .rknn models for Rockchip NPUs, checked against ONNX Runtime."""


for command in (build.build, lint.lint, diagnose.diagnose, calib.calib, quantize.quantize, generate.generate,
                compare.compare, release.release, release.verify, matrix.matrix, fuzz.fuzz):
    main.add_command(command)
