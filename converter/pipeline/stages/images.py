"""Stage `images`: the model's evaluation set drawn twice, by the reference UNet (ONNX Runtime on the
rewritten graph) and by the `.rknn` in the toolkit's simulator (rebuilt: pipeline/simulator.py), then
compared image by image."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter.common import onnx_runtime
from converter.common.progress import Progress
from converter.imaging.evaluation import EvalSet, compare_images, judge_for
from converter.imaging.pictures import comparison_grid, difference, save_png
from converter.imaging.runtime_unet import RuntimeUNet
from converter.imaging.text_to_image import generate, pipeline
from converter.pipeline.build_dir import StageOutput, StageResult
from converter.pipeline.simulator import BuiltModel, rebuilt_simulator

GRID = "grid.png"


@dataclass(frozen=True)
class Images(StageOutput):
    figures: dict  # report.json `images`: rows per prompt, summary, grid, steps, guidance, judge

    @classmethod
    def read(cls, record: StageResult) -> Images:
        return cls(record, record.meta)

    @property
    def pngs(self) -> list[Path]:
        return sorted(self.path.glob("*.png"))


@dataclass(frozen=True)
class Drawing:
    """What to draw: prompts with their noise seeds, the sampler's steps and guidance, the image size."""

    prompts: list[str]
    seeds: list[int]
    steps: int
    guidance_scale: float
    resolution: int
    scheduler: str | None = None  # a sampler's name (ddim, euler, euler-ancestral, lcm); None: the folder's own


def run(folder: Path, model: BuiltModel, evaluation: EvalSet, resolution: int, log: Path, progress: Progress,
        tmp: Path) -> dict:
    drawing = Drawing([p.prompt for p in evaluation.prompts], [p.seed for p in evaluation.prompts], evaluation.steps,
                      evaluation.guidance_scale, resolution)
    ref, converted = draw_both(folder, model, drawing, log, progress, tmp)
    result = compare_images(ref, converted, drawing.prompts, judge_for(evaluation.judge))
    for i, row in enumerate(result["rows"]):
        row.update(category=evaluation.prompts[i].category, seed=drawing.seeds[i])
        row.update(save_trio(tmp, f"{i:02d}", ref[i], converted[i]))
    save_png(tmp / GRID, comparison_grid(ref, converted, drawing.prompts))
    return {**result, "grid": GRID, "steps": evaluation.steps, "guidance_scale": evaluation.guidance_scale,
            "judge": evaluation.judge}


def save_trio(folder: Path, stem: str, ref: np.ndarray, converted: np.ndarray) -> dict[str, str]:
    """{reference, rknn, difference}: the PNG names written for one prompt."""
    names = {"reference": f"{stem}-reference.png", "rknn": f"{stem}-rknn.png", "difference": f"{stem}-difference.png"}
    for image, name in zip((ref, converted, difference(ref, converted)), names.values()):
        save_png(folder / name, image)
    return names


def draw_both(folder: Path, model: BuiltModel, drawing: Drawing, log: Path, progress: Progress,
              scratch: Path) -> tuple[np.ndarray, np.ndarray]:
    """`drawing` by the pipeline in `folder` with the reference UNet, then with the .rknn of `model`,
    rebuilt in the simulator (BuildFailed if the rebuild computes anything else)."""
    to_graph = model.passes.feeder()
    config = json.loads((folder / "unet" / "config.json").read_text())

    def draw(label: str, run) -> np.ndarray:
        def on_step(done: int, total: int) -> None:
            progress.note(f"{label}: step {done}/{total} of {len(drawing.prompts)} images")

        return generate(pipeline(folder, RuntimeUNet(config, to_graph, run), drawing.scheduler), drawing.prompts,
                        drawing.seeds, drawing.steps, drawing.guidance_scale, drawing.resolution, on_step)

    ref = draw("ONNX Runtime", _onnx_runtime(model.passes.onnx, model.passes.outputs[0]))
    with rebuilt_simulator(model, log, progress.tick, scratch) as infer:
        converted = draw(".rknn in the simulator", lambda feeds: [outs[0] for outs in infer(feeds)])
    return ref, converted


def _onnx_runtime(onnx_path: Path, output: str):
    session = onnx_runtime.session(onnx_path)
    return lambda feeds: [onnx_runtime.run(session, f)[output] for f in feeds]
