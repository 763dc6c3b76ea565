"""Drawing a model's prompts with diffusers' pipeline and its UNet replaced: by ONNX Runtime on the rewritten
graph, and by what a build put on the NPU, each model rebuilt in the toolkit's simulator (build/simulator.py).
The image stage, `generate` and the benchmarks draw with it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from converter.builds.simulator import BuiltModel, PipelineModels, rebuilt_simulator
from converter.common import onnx_runtime
from converter.common.progress import Progress
from converter.imaging.evaluation import EvalSet
from converter.imaging.pictures import difference, save_png
from converter.imaging.runtime_unet import RuntimeUNet
from converter.imaging.text_to_image import denoise, from_decoder, pipeline, to_uint8, token_ids, vae_scaling_factor
from converter.models.family import Signature


@dataclass(frozen=True)
class Drawing:
    """What to draw: prompts with their noise seeds, the sampler's steps and guidance, the image size; to redraw an
    image (img2img), the image and how much of its noise schedule the sampler runs over it (`strength`)."""

    prompts: list[str]
    seeds: list[int]
    steps: int
    guidance_scale: float
    resolution: int
    scheduler: str | None = None  # a sampler's name (ddim, euler, euler-ancestral, lcm); None: the folder's own
    init_image: Image.Image | None = None  # RGB, resolution x resolution
    strength: float = 0.8

    @classmethod
    def of(cls, evaluation: EvalSet, resolution: int) -> Drawing:
        """A model's evaluation set at `resolution`."""
        return cls([p.prompt for p in evaluation.prompts], [p.seed for p in evaluation.prompts], evaluation.steps,
                   evaluation.guidance_scale, resolution)


def save_trio(folder: Path, stem: str, ref: np.ndarray, converted: np.ndarray) -> dict[str, str]:
    """{reference, rknn, difference}: the PNG names written for one prompt."""
    names = {"reference": f"{stem}-reference.png", "rknn": f"{stem}-rknn.png", "difference": f"{stem}-difference.png"}
    for image, name in zip((ref, converted, difference(ref, converted)), names.values()):
        save_png(folder / name, image)
    return names


def draw_both(folder: Path, models: PipelineModels, drawing: Drawing, log: Path, progress: Progress,
              scratch: Path) -> tuple[np.ndarray, np.ndarray]:
    """`drawing` by the pipeline in `folder` with the reference UNet (its own text encoder and VAE in torch), then
    with what `models` put on the NPU, each rebuilt in the simulator in turn (text encoder, UNet, VAE decoder:
    one simulator up at a time); BuildFailed if a rebuild computes anything else than its build did."""
    unet = models.unet
    to_graph = unet.passes.feeder()

    def denoise_with(label: str, run, text: dict, output_type: str) -> np.ndarray:
        def on_step(done: int, total: int) -> None:
            progress.note(f"{label}: step {done}/{total} of {len(drawing.prompts)} images")

        return draw(folder, drawing, text, to_graph, run, on_step, output_type)

    def simulator(model: BuiltModel, part: str):
        return rebuilt_simulator(model, log.with_name(f"{log.stem}-{part}.log") if part != "unet" else log,
                                 progress.tick, scratch)

    prompts = {"prompt": drawing.prompts}
    ref = to_uint8(denoise_with("ONNX Runtime", _onnx_runtime(unet.passes.onnx, unet.passes.outputs[0]), prompts,
                                "np"))
    text = _npu_text_states(folder, models.text_encoder, drawing.prompts, simulator) if models.text_encoder else prompts
    with simulator(unet, "unet") as infer:
        out = denoise_with(".rknn in the simulator", lambda feeds: [outs[0] for outs in infer(feeds)], text,
                           "latent" if models.vae_decoder else "np")
    if models.vae_decoder:
        progress.note(f"decoding {len(out)} images: the VAE decoder's .rknn in the simulator")
        scaling = vae_scaling_factor(folder)
        with simulator(models.vae_decoder, "vae_decoder") as infer:
            decoded = infer([{models.vae_decoder.passes.input_names[0]: latent[None] / np.float32(scaling)}
                             for latent in out.numpy()])
        out = from_decoder(np.concatenate([outputs[0] for outputs in decoded]))
    return ref, to_uint8(out)


def draw(folder: Path, drawing: Drawing, text: dict, to_graph, run, on_step=None, output_type: str = "np"):
    """`drawing` by the pipeline in `folder` with its UNet replaced: `to_graph` turns each call's model-level
    inputs into the graph's, `run` computes the graph's outputs for a batch of them (imaging/runtime_unet.py);
    `text` as text_to_image.denoise takes it."""
    config = json.loads((folder / "unet" / "config.json").read_text())
    signature = Signature.of_config(config, drawing.resolution)
    init = (drawing.init_image, drawing.strength) if drawing.init_image else None
    pipe = pipeline(folder, RuntimeUNet(signature, to_graph, run, config), drawing.scheduler, img2img=bool(init))
    return denoise(pipe, text, drawing.seeds, drawing.steps, drawing.guidance_scale, drawing.resolution, on_step,
                   output_type, init)


def _npu_text_states(folder: Path, encoder: BuiltModel, prompts: list[str], simulator) -> dict:
    """The prompts' and the empty prompt's text states from the text encoder's .rknn in the simulator, as the
    pipeline's prompt_embeds and negative_prompt_embeds (unused by a pipeline without guidance)."""
    ids = token_ids(folder, [*prompts, ""])
    with simulator(encoder, "text_encoder") as infer:
        states = torch.from_numpy(np.concatenate([outs[0] for outs in infer(
            [{encoder.passes.input_names[0]: row[None]} for row in ids])]).astype(np.float32))
    return {"prompt_embeds": states[:-1], "negative_prompt_embeds": states[-1:].repeat(len(prompts), 1, 1)}


def _onnx_runtime(onnx_path: Path, output: str):
    session = onnx_runtime.session(onnx_path)
    return lambda feeds: [onnx_runtime.run(session, f)[output] for f in feeds]
