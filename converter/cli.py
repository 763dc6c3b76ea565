"""The `rkconvert` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from . import __version__
from .cli_options import model_options, target_options
from .errors import BuildFailed, UserError

EXIT_CODES = "Exit status: 0 built and within the gates, 1 build failed (toolkit crash or refusal, accuracy gate), 2 bad input."


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


@main.command(epilog=EXIT_CODES)
@model_options
@target_options
@click.option("--resolution", type=int, default=None,
              help="Image size in pixels (latent = size/8), static in the graph. "
                   "Default: the model's own (sample_size x 8: 512 for the SD presets, 128 for demo).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Build folder (default: build/<model>-<target>/). Stages found there with "
                   "unchanged inputs are reused.")
@click.option("--min-psnr", type=float, default=40.0, show_default=True,
              help="Fail the build when the .rknn's output PSNR against ONNX Runtime (dB) is lower.")
@click.option("--check-samples", type=click.IntRange(1), default=1, show_default=True,
              help="How many inputs (timesteps spread over 0-999) to compare the .rknn on.")
@click.option("--skip-pass", "skip_passes", multiple=True, metavar="PASS",
              help="Leave out a graph pass of the target's list (repeatable), e.g. to reproduce a toolkit failure.")
@click.option("--rebuild", is_flag=True, help="Ignore stages kept from earlier runs.")
def build(model_spec, config_path, trust_pickle, seed, target, resolution, out, min_psnr, check_samples,
          skip_passes, rebuild):
    """Build MODEL into a .rknn for --target and check it against ONNX Runtime.

    Stages: export (trace to static-shape ONNX, opset 17) -> passes (the target's graph rewrites) ->
    reference (ONNX Runtime outputs on check inputs) -> rknn (rknn-toolkit2 build and simulator run,
    in a child process) -> report.json. The .rknn, report.json and any host programs (small ONNX
    models computing inputs such as t_emb from the timestep on the board's CPU) land in --out.
    """
    from targets import get_chip

    from .build_pipeline import BuildRequest, build as run_build
    from .model_source import resolve
    from .progress import Progress
    from .report import print_summary

    chip = get_chip(target)
    source = resolve(model_spec, config_path, trust_pickle, seed)
    out = out or Path("build") / f"{source.name}-{chip.name}"
    console = Console(stderr=True, highlight=False)
    req = BuildRequest(source, chip, out, resolution, min_psnr, check_samples, seed, tuple(skip_passes), rebuild)
    report = run_build(req, Progress(console))
    print_summary(Console(), report, req.report_path)


if __name__ == "__main__":
    main()
