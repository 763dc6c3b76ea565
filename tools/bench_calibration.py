"""Does calibrating on the sampler's trajectories beat calibrating on noise? w8a8 output PSNR, as JSON.

    .venv/bin/python tools/bench_calibration.py --model demo --samples 32 [--json bench-results/x.json]

1. `rkconvert build --dtype w8a8`: calibrated on --samples inputs recorded along the sampler's
   trajectories, judged on held-out trajectory inputs (other prompts, other noise);
2. the same rewritten graph, rebuilt by the toolkit calibrated on as many Gaussian stand-ins
   (unit-Gaussian latent and text states, timesteps spread over 0-999), judged on the same inputs.
A model that can draw (the demo) is also judged by its images: the build's own image check for (1),
the same evaluation set drawn through the Gaussian-calibrated .rknn for (2), both against the same
ONNX Runtime reference images (image PSNR, SSIM, prompt accuracy).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from calib_data.check_inputs import check_inputs
from converter.builds.build_dir import finished_stage
from converter.builds.finished import FinishedBuild
from converter.builds.simulator import BuiltModel
from converter.builds.stages.export import Exported
from converter.common.accuracy import compare
from converter.models.unet_interface import specs_from_json
from converter.toolkit import driver
from converter.toolkit.job import ToolkitSettings


def gaussian_dataset(build: FinishedBuild, folder: Path, count: int, seed: int) -> Path:
    """`count` Gaussian stand-ins, as the rewritten graph takes them, in RKNN's dataset format."""
    exported = Exported.read(finished_stage(build.folder, "export"))
    to_graph = build.passes.feeder()
    lines = []
    for i, feed in enumerate(check_inputs(specs_from_json(exported.inputs), count, seed)):
        files = []
        for name, value in to_graph(feed).items():
            np.save(folder / f"{i:05d}-{name}.npy", value)
            files.append(f"{i:05d}-{name}.npy")
        lines.append(" ".join(files))
    (folder / "dataset.txt").write_text("\n".join(lines) + "\n")
    return folder / "dataset.txt"


def _gaussian_images(build: FinishedBuild, model: BuiltModel, tmp: Path) -> dict:
    """The build's evaluation set drawn through the Gaussian-calibrated .rknn, against the build's reference images."""
    from PIL import Image
    from rich.console import Console

    from converter.builds.drawing import Drawing, draw_both
    from converter.common.progress import Progress
    from converter.imaging.evaluation import compare_images, eval_set, judge_for

    report = build.report
    evaluation = eval_set(build.pipeline)
    drawing = Drawing.of(evaluation, report.resolution)
    _, converted = draw_both(build.pipeline, model, drawing, tmp / "gaussian-images.log",
                             Progress(Console(stderr=True)), tmp)
    folder = build.folder / report.images.grid.rsplit("/", 1)[0]
    reference = np.stack([np.asarray(Image.open(folder / r["reference"]).convert("RGB")) for r in report.images.rows])
    return compare_images(reference, converted, drawing.prompts, judge_for(evaluation.judge))["summary"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--target", default="rk3588")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--check-samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    json_path = args.json or Path("bench-results") / f"calibration-{args.model.replace(':', '-')}.json"

    with tempfile.TemporaryDirectory(prefix="bench-calib-") as tmp:
        out = Path(tmp) / "build"
        subprocess.run([sys.executable, "-m", "converter.cli", "build", "--target", args.target, "--model", args.model,
                        "--dtype", "w8a8", "--samples", str(args.samples), "--trajectories", str(args.trajectories),
                        "--check-samples", str(args.check_samples), "--seed", str(args.seed), "--min-psnr", "0",
                        "--layer-report", "off", "--out", str(out)], check=True)
        build = FinishedBuild.open(out)
        report = build.report

        folder = Path(tmp) / "gaussian"
        folder.mkdir()
        dataset = gaussian_dataset(build, folder, args.samples, args.seed)
        passes, reference = build.passes, build.reference
        job = ToolkitSettings(args.target, "w8a8").job(passes.onnx, passes.input_names, passes.outputs, dataset)
        rebuilt = Path(tmp) / "rknn-gaussian"
        rebuilt.mkdir()
        _, result = driver.build_and_simulate(job, rebuilt, reference.samples, Path(tmp) / "gaussian.log")
        ref = np.concatenate([np.load(path).ravel() for outputs in reference.outputs for path in outputs.values()])
        sim = np.concatenate([np.load(p).ravel() for outs in result["outputs"] for p in outs])
        gaussian = compare(sim, ref)
        images = report.images
        model = BuiltModel(passes, reference, [job], Path(result["outputs"][0][0]))
        gaussian_images = _gaussian_images(build, model, Path(tmp)) if images else None

    summary = {
        "benchmark": "calibration",
        "model": args.model, "target": args.target, "dtype": "w8a8", "samples": args.samples,
        "trajectories": args.trajectories, "check_samples": args.check_samples,
        "check_inputs": report.check_inputs,
        "trajectory_calibrated": {"psnr_db": report.accuracy.psnr_db, "cosine": report.accuracy.cosine},
        "gaussian_calibrated": {"psnr_db": gaussian["psnr_db"], "cosine": gaussian["cosine"]},
    }
    if images:
        summary["trajectory_calibrated"]["images"] = images.summary
        summary["gaussian_calibrated"]["images"] = gaussian_images
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
