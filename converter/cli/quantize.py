"""`rkconvert quantize`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from converter.cli.exits import EXIT_CODES
from converter.cli.groups import MODEL, RESOLUTION
from converter.cli.options import group_options
from converter.models.model_source import ModelSource


@click.command(epilog=EXIT_CODES)
@group_options(MODEL, RESOLUTION)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder to write (replaced if it exists).")
def quantize(source: ModelSource, seed: int, resolution: int | None, out: Path):
    """W8A16 weight-only quantization of MODEL's Conv and Linear weights (symmetric, per output channel).

    Each channel's int8 range is the better of min-max and a histogram search (least weight MSE).
    Writes a diffusers folder whose safetensors hold int8 weights + float32 scales, the same model as
    ONNX with weight-only DequantizeLinear (unet-w8a16.onnx), and quantize.json. Both forms build
    with `rkconvert build --model OUT` (or OUT/unet-w8a16.onnx).
    """
    from converter.quantize.command import quantize as run_quantize

    with Console(stderr=True).status(f"quantizing {source.spec}"):
        summary = run_quantize(source, out, resolution)
    Console().print(f"{summary['layers']} layers to int8 (weight SQNR mean {summary['weight_sqnr_db_mean']:.1f} dB, "
                    f"min {summary['weight_sqnr_db_min']:.1f} dB; {summary['histogram_channels']} of "
                    f"{summary['channels']} channels clipped by the histogram search); weights "
                    f"{summary['fp32_weight_bytes'] / 2**20:.1f} MiB fp32 -> {summary['safetensors_bytes'] / 2**20:.1f} MiB "
                    f"in {out}")
