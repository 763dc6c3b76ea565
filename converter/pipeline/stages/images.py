"""Stage `images`: the model's evaluation set drawn twice, by the reference UNet (ONNX Runtime on the
rewritten graph) and by the `.rknn` in the toolkit's simulator, then compared image by image.

The simulator only runs a model it has just built, so the toolkit builds the `.rknn` once more with
the same settings and serves the denoising loop; its output on the first check sample must equal the
`rknn` stage's, which shows it is the same model (the two `.rknn` files differ in bytes: the toolkit
stamps them).
"""

from __future__ import annotations

import json
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from converter.pipeline.build_dir import StageResult
from converter.pipeline.request import BuildRequest
from converter.pipeline.stages import rknn as rknn_stage
from converter.pipeline.stages.reference import feed, feeder
from converter.common import onnx_runtime
from converter.common.errors import BuildFailed
from converter.common.progress import Progress
from converter.imaging.evaluation import EvalSet, compare_images, judge_for
from converter.imaging.pictures import comparison_grid, difference, save_png
from converter.imaging.runtime_unet import RuntimeUNet
from converter.imaging.text_to_image import generate, pipeline
from converter.toolkit import driver
from targets.chip import Chip

GRID = "grid.png"
# The stage whose calibration the toolkit got, by whether the build is in parts: what a rebuild needs.
CALIBRATION = {False: "calib", True: "split-calib"}


def run(req: BuildRequest, export: StageResult, passes: StageResult, split: StageResult | None, reference: StageResult,
        rknn: StageResult, calib: StageResult | None, evaluation: EvalSet, log: Path, progress: Progress,
        tmp: Path) -> dict:
    prompts = [p.prompt for p in evaluation.prompts]
    seeds = [p.seed for p in evaluation.prompts]
    ref, converted = draw_both(req.source.pipeline, req.chip, req.dtype, passes, split, reference, rknn, calib, prompts,
                               seeds, evaluation.steps, evaluation.guidance_scale, export.meta["resolution"], log,
                               progress, tmp)
    result = compare_images(ref, converted, prompts, judge_for(evaluation.judge))
    for i, row in enumerate(result["rows"]):
        row.update(category=evaluation.prompts[i].category, seed=seeds[i])
        row.update(save_trio(tmp, f"{i:02d}", ref[i], converted[i]))
    save_png(tmp / GRID, comparison_grid(ref, converted, prompts))
    return {**result, "grid": GRID, "steps": evaluation.steps, "guidance_scale": evaluation.guidance_scale,
            "judge": evaluation.judge}


def save_trio(folder: Path, stem: str, ref: np.ndarray, converted: np.ndarray) -> dict[str, str]:
    """{reference, rknn, difference}: the PNG names written for one prompt."""
    names = {"reference": f"{stem}-reference.png", "rknn": f"{stem}-rknn.png", "difference": f"{stem}-difference.png"}
    for image, name in zip((ref, converted, difference(ref, converted)), names.values()):
        save_png(folder / name, image)
    return names


def draw_both(folder: Path, chip: Chip, dtype: str, passes: StageResult, split: StageResult | None,
              reference: StageResult, rknn: StageResult, calib: StageResult | None, prompts: list[str],
              seeds: list[int], steps: int, guidance_scale: float,
              resolution: int, log: Path, progress: Progress, scratch: Path) -> tuple[np.ndarray, np.ndarray]:
    """The prompts drawn by the pipeline in `folder` with the reference UNet, then with the .rknn that the
    `rknn` stage built, rebuilt in the simulator (BuildFailed if the rebuild computes anything else)."""
    onnx_path = passes.path / passes.meta["onnx"]
    to_graph = feeder(passes)
    config = json.loads((folder / "unet" / "config.json").read_text())

    def draw(label: str, run) -> np.ndarray:
        def on_step(done: int, total: int) -> None:
            progress.note(f"{label}: step {done}/{total} of {len(prompts)} images")

        return generate(pipeline(folder, RuntimeUNet(config, to_graph, run)), prompts, seeds, steps, guidance_scale,
                        resolution, on_step)

    ref = draw("ONNX Runtime", _onnx_runtime(onnx_path, passes.meta["outputs"][0]))
    with rebuilt_simulator(chip, dtype, passes, split, reference, rknn, calib, log, progress.tick, scratch) as infer:
        converted = draw(".rknn in the simulator", lambda feeds: [outs[0] for outs in infer(feeds)])
    return ref, converted


@contextmanager
def rebuilt_simulator(chip: Chip, dtype: str, passes: StageResult, split: StageResult | None, reference: StageResult,
                      rknn: StageResult, calib: StageResult | None, log: Path, on_tick, scratch: Path):
    """The `rknn` stage's model rebuilt in a serving simulator (it cannot run a .rknn file), checked to
    compute what the build's did on check sample 0 (BuildFailed if not); yields infer([feed]) -> [[out]].
    A model in parts is a simulator per part, built in turn and kept up together, each fed the graph's
    inputs and the earlier parts' outputs by name."""
    models = rknn_stage.toolkit_models(passes, split, calib)
    with ExitStack() as serving:
        parts = []
        for i, model in enumerate(models, start=1):
            parts.append(serving.enter_context(driver.serving_simulator(
                model["onnx"], chip, scratch / f"simulator-build-{i}", model["inputs"], model["outputs"],
                rknn_stage.part_log(log, i, len(models)),
                on_tick, dtype, model["dataset"], rknn.meta["float16_layers"], rknn.meta.get("toolkit_config"))))

        def infer(feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
            tensors = [dict(f) for f in feeds]
            for model, part in zip(models, parts):
                outputs = part([{name: t[name] for name in model["inputs"]} for t in tensors])
                for t, values in zip(tensors, outputs):
                    t.update(zip(model["outputs"], values))
            return [[t[name] for name in passes.meta["outputs"]] for t in tensors]

        check = infer([feed(reference, 0)])[0][0]
        built = np.load(rknn.path / rknn.meta["simulator"][0][0])
        if not np.array_equal(check, built):
            raise BuildFailed(f"the toolkit's rebuild of the .rknn computes another model: its output on check "
                              f"sample 0 differs from the build's by up to {np.abs(check - built).max():.3g}")
        yield infer
    for i in range(1, len(models) + 1):
        shutil.rmtree(scratch / f"simulator-build-{i}")


def _onnx_runtime(onnx_path: Path, output: str):
    session = onnx_runtime.session(onnx_path)
    return lambda feeds: [onnx_runtime.run(session, f)[output] for f in feeds]
