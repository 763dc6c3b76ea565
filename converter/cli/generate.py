"""`rkconvert generate`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from converter.board.samplers import NAMES as SAMPLER_NAMES


@click.command(epilog="Exit status: 0 images written, 1 the toolkit failed, 2 bad input.")
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--prompt", "prompts", multiple=True, required=True,
              help="What to draw (repeatable: the prompts are denoised together).")
@click.option("--steps", type=click.IntRange(1), default=None,
              help="Denoising steps (default: the model's evaluation setting, else 4 for an LCM "
                   "scheduler and 20 for others).")
@click.option("--guidance-scale", type=click.FloatRange(0), default=None,
              help="Classifier-free guidance (default: the model's evaluation setting, else 7.5; with an LCM "
                   "scheduler 1, none, or the 8 an LCM-distilled UNet embeds).")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed of the first prompt (then +1 each).")
@click.option("--scheduler", type=click.Choice(sorted(SAMPLER_NAMES)), default=None,
              help="Sampler, on the pipeline's own noise schedule (default: the one its scheduler_config.json names). "
                   "The board runner takes the same --scheduler.")
@click.option("--init-image", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Redraw this picture (img2img: its latents, noised to --strength, are where the sampler starts); "
                   "it must be the build's size.")
@click.option("--strength", type=click.FloatRange(0, 1, min_open=True), default=0.8, show_default=True,
              help="With --init-image: how much of the noise schedule is run over it (1: all of it, the picture "
                   "barely kept; the sampler takes int(steps x strength) steps), as diffusers' img2img pipeline.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for the PNGs (default: BUILD_DIR/images/).")
def generate(build_dir, prompts, steps, guidance_scale, seed, scheduler, init_image, strength, out):
    """Draw --prompt with a finished build's model, once with the reference UNet (ONNX Runtime on the
    final ONNX) and once with its .rknn in rknn-toolkit2's simulator.

    The tokenizer, text encoder, scheduler (with classifier-free guidance) and VAE run on the host; the
    toolkit rebuilds the .rknn in a child process (its simulator only runs a model it has just built)
    and checks the rebuild against the build's own check output first. Writes NN-reference.png,
    NN-rknn.png, NN-difference.png (x4) per prompt and grid.png.
    """
    from converter.common.progress import Progress
    from converter.generate.from_build import generate as run_generate

    out = out or build_dir / "images"
    rows = run_generate(build_dir, list(prompts), seed, steps, guidance_scale, out,
                        Progress(Console(stderr=True, highlight=False)), scheduler, init_image, strength)
    console = Console(highlight=False)
    for i, row in enumerate(rows):
        console.print(f"{out / row['rknn']}  seed {row['seed']}  vs reference: PSNR {row['psnr_db']:.1f} dB, "
                      f"SSIM {row['ssim']:.4f}  {row['prompt']!r}", markup=False)
    console.print(f"grid (reference | .rknn | difference x4): {out / 'grid.png'}", markup=False)
