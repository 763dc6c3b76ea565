"""Draw a user's prompts with a finished build's model: its pipeline folder's text encoder, scheduler
and VAE, and its UNet twice (ONNX Runtime on the build's final ONNX; the `.rknn` the build made, in
the toolkit's simulator)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from converter.pipeline.build_dir import finished_stage
from converter.pipeline.stages.images import CALIBRATION, draw_both, save_trio
from converter.common.errors import UserError
from converter.common.progress import Progress
from converter.imaging.evaluation import eval_set, psnr, ssim
from converter.imaging.pictures import comparison_grid, save_png
from targets import get_chip


def _report(build_dir: Path) -> dict:
    path = build_dir / "report.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a build folder's report ({type(e).__name__}: {e})") from None
    if report.get("status") != "ok":
        raise UserError(f"{path}: the build did not finish (status {report.get('status')!r}); build it first")
    if not report.get("pipeline"):
        raise UserError(f"{path}: {report.get('model')} is a UNet alone; generate needs its text encoder, scheduler "
                        "and VAE: build a diffusers pipeline folder (or the demo)")
    return report


def generate(build_dir: Path, prompts: list[str], seed: int, steps: int | None, guidance_scale: float | None,
             out: Path, progress: Progress) -> list[dict]:
    """PNGs per prompt in `out` (reference, rknn, difference) and grid.png; a row of figures per prompt."""
    report = _report(build_dir)
    folder = Path(report["pipeline"])
    declared = eval_set(folder)
    steps = steps or (declared.steps if declared else 20)
    guidance_scale = guidance_scale if guidance_scale is not None else (declared.guidance_scale if declared else 7.5)
    calib = finished_stage(build_dir, CALIBRATION[bool(report.get("parts"))]) if report["dtype"] != "float16" else None
    seeds = [seed + i for i in range(len(prompts))]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".generate-", dir=out) as scratch, \
            progress.stage("generate", f"{len(prompts)} prompts, {steps} steps, ONNX Runtime and the .rknn"):
        ref, converted = draw_both(folder, get_chip(report["target"]), report["dtype"], finished_stage(build_dir, "passes"),
                                   finished_stage(build_dir, "split") if report.get("parts") else None,
                                   finished_stage(build_dir, "reference"), finished_stage(build_dir, report["rknn_stage"]), calib,
                                   prompts, seeds, steps, guidance_scale, report["resolution"],
                                   build_dir / "logs" / "rknn-generate.log", progress, Path(scratch))
        rows = []
        for i, prompt in enumerate(prompts):
            names = save_trio(Path(scratch), f"{i:02d}", ref[i], converted[i])
            rows.append({"prompt": prompt, "seed": seeds[i], "psnr_db": psnr(converted[i], ref[i]),
                         "ssim": ssim(converted[i], ref[i]), **names})
        save_png(Path(scratch) / "grid.png", comparison_grid(ref, converted, prompts))
        for png in Path(scratch).glob("*.png"):
            png.replace(out / png.name)
    return rows
