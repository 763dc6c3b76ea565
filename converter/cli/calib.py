"""`rkconvert calib`."""

from __future__ import annotations

import click
from rich.console import Console

from converter.builds.request import BuildRequest
from converter.cli.exits import EXIT_CODES
from converter.cli.groups import CALIB_GROUPS
from converter.cli.options import request_options


@click.command(epilog=EXIT_CODES)
@request_options(*CALIB_GROUPS)
def calib(request: BuildRequest):
    """Record a calibration set: the UNet's real inputs along the sampler's trajectories.

    Runs diffusers' StableDiffusionPipeline (text encoder, scheduler, classifier-free guidance) on the
    host, keeps --samples of the UNet's inputs as the rewritten graph takes them, and writes them in
    RKNN's dataset format (stages/calib/dataset.txt, one line per sample) with calib.json (per-input
    statistics, overall and per timestep). Deterministic for --seed; reused by `build` when unchanged.
    """
    from converter.builds.builder import calibrate
    from converter.common.progress import Progress
    from converter.reports.report import print_calibration

    recorded = calibrate(request, Progress(Console(stderr=True, highlight=False)))
    print_calibration(Console(), recorded.dataset, recorded.stats)
