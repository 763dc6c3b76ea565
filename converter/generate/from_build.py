"""Draw a user's prompts with a finished build's model twice: the reference (its pipeline folder's text
encoder and VAE, ONNX Runtime on the UNet's final ONNX) and what the build put on the NPU (the UNet's
`.rknn`, and the text encoder's and VAE decoder's where it built them), in the toolkit's simulator."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from converter.builds.drawing import Drawing, draw_both, save_trio
from converter.builds.finished import FinishedBuild
from converter.common.errors import UserError
from converter.common.progress import Progress
from converter.imaging.evaluation import default_drawing, psnr, ssim
from converter.imaging.pictures import comparison_grid, save_png


def generate(build_dir: Path, prompts: list[str], seed: int, steps: int | None, guidance_scale: float | None,
             out: Path, progress: Progress, scheduler: str | None = None, init_image: Path | None = None,
             strength: float = 0.8) -> list[dict]:
    """PNGs per prompt in `out` (reference, rknn, difference) and grid.png; a row of figures per prompt. With
    `init_image`, each prompt redraws that image at `strength` (img2img)."""
    build = FinishedBuild.open(build_dir)
    folder = build.pipeline
    if folder is None:
        raise UserError(f"{build_dir / 'report.json'}: {build.report.model} is a UNet alone; generate needs "
                        "its text encoder, scheduler and VAE: build a diffusers pipeline folder (or the demo)")
    default_steps, default_guidance = default_drawing(folder, "guidance" in build.export.signature.sources().values())
    steps = steps or default_steps
    guidance_scale = default_guidance if guidance_scale is None else guidance_scale
    drawing = Drawing(prompts, [seed + i for i in range(len(prompts))], steps, guidance_scale,
                      build.report.resolution, scheduler, _init_image(init_image, build.report.resolution)
                      if init_image else None, strength)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".generate-", dir=out) as scratch, \
            progress.stage("generate", f"{len(prompts)} prompts, {steps} steps, ONNX Runtime and the .rknn"):
        ref, converted = draw_both(folder, build.models(), drawing, build_dir / "logs" / "rknn-generate.log", progress,
                                   Path(scratch))
        rows = []
        for i, prompt in enumerate(prompts):
            names = save_trio(Path(scratch), f"{i:02d}", ref[i], converted[i])
            rows.append({"prompt": prompt, "seed": drawing.seeds[i], "psnr_db": psnr(converted[i], ref[i]),
                         "ssim": ssim(converted[i], ref[i]), **names})
        save_png(Path(scratch) / "grid.png", comparison_grid(ref, converted, prompts))
        for png in Path(scratch).glob("*.png"):
            png.replace(out / png.name)
    return rows


def _init_image(path: Path, resolution: int) -> Image.Image:
    """The image to redraw, as RGB; UserError unless it is a picture of the build's size (the UNet's shapes are
    fixed)."""
    try:
        image = Image.open(path).convert("RGB")
    except (OSError, ValueError) as e:
        raise UserError(f"--init-image {path}: not a picture this tool reads ({e})") from None
    if image.size != (resolution, resolution):
        raise UserError(f"--init-image {path}: {image.size[0]}x{image.size[1]} px; this build draws "
                        f"{resolution}x{resolution} (its UNet's shapes are fixed at build time)")
    return image
