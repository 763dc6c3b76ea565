"""Stage `images`: the model's evaluation set drawn twice, by the reference (ONNX Runtime on the UNet's
rewritten graph, the pipeline's own text encoder and VAE) and by what the build put on the NPU (the UNet's
`.rknn`, and the text encoder's and VAE decoder's where they were built), each in the toolkit's simulator
(rebuilt: build/simulator.py), then compared image by image (the drawing: builds/drawing.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converter.builds.build_dir import StageOutput, StageResult
from converter.builds.simulator import PipelineModels
from converter.builds.stage_run import StageRunner
from converter.builds.stages.export import Exported
from converter.common.progress import Progress
from converter.imaging.evaluation import EvalSet, compare_images, judge_for
from converter.imaging.pictures import comparison_grid, save_png
from converter.toolkit.job import ToolkitSettings

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


def stage(runner: StageRunner, folder: Path, evaluation: EvalSet, exported: Exported, models: PipelineModels,
          made_by: list[StageOutput], toolkit: ToolkitSettings) -> Images:
    """The evaluation set, drawn through ONNX Runtime and through what `models` run on the NPU (which stages
    `made_by` made)."""
    what = (f"{len(evaluation.prompts)} prompts, {evaluation.steps} steps, ONNX Runtime vs "
            f"{' + '.join(models.on_npu)} in the simulator")
    return Images.read(runner.run(
        "images", what, {"evaluation": evaluation.fingerprint(), "dtype": toolkit.dtype, "target": toolkit.target},
        [exported, *made_by],
        lambda tmp: run(folder, models, evaluation, exported.resolution, runner.logs / "rknn-images.log",
                        runner.progress, tmp)))


def run(folder: Path, models: PipelineModels, evaluation: EvalSet, resolution: int, log: Path, progress: Progress,
        tmp: Path) -> dict:
    from converter.builds.drawing import Drawing, draw_both, save_trio  # torch and diffusers: only to draw

    drawing = Drawing.of(evaluation, resolution)
    ref, converted = draw_both(folder, models, drawing, log, progress, tmp)
    result = compare_images(ref, converted, drawing.prompts, judge_for(evaluation.judge))
    for i, row in enumerate(result["rows"]):
        row.update(category=evaluation.prompts[i].category, seed=drawing.seeds[i])
        row.update(save_trio(tmp, f"{i:02d}", ref[i], converted[i]))
    save_png(tmp / GRID, comparison_grid(ref, converted, drawing.prompts))
    return {**result, "grid": GRID, "steps": evaluation.steps, "guidance_scale": evaluation.guidance_scale,
            "judge": evaluation.judge, "on_npu": models.on_npu}
