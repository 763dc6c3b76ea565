"""Stage `calib`: the UNet's real inputs along the deployed sampler's trajectories (calib_data/), as
the rewritten graph takes them (t_emb computed by the host programs), in RKNN's dataset format."""

from __future__ import annotations

from pathlib import Path

from calib_data import text_encoder
from calib_data.dataset_writer import DATASET, STATS, DatasetWriter
from calib_data.prompts import load_prompts
from calib_data.recorder import UnetCall, choose, pipeline, record, timesteps_of
from calib_data.schedules import get_schedule
from converter.pipeline.build_dir import StageResult
from converter.pipeline.request import BuildRequest
from converter.pipeline.stages.reference import feeder
from converter.common import onnx_runtime
from converter.common.errors import UserError
from converter.common.progress import Progress
from converter.imaging.evaluation import declared_prompts
from converter.imaging.runtime_unet import RuntimeUNet, config_from_specs


def run(req: BuildRequest, export: StageResult, passes: StageResult, progress: Progress, tmp: Path) -> dict:
    settings = req.calib
    schedule = get_schedule(settings.schedule)
    folder = req.source.pipeline
    prompts = load_prompts(settings.prompts or (declared_prompts(folder) if folder else None))
    timesteps = timesteps_of(schedule)
    try:
        picks = choose(prompts, schedule, timesteps, settings.samples, settings.trajectories, settings.weighting,
                       req.seed)
    except ValueError as e:
        raise UserError(f"--samples {settings.samples}: {e}; raise --trajectories") from None
    unet = _unet(req, export)
    encoder_folder = settings.text_encoder or folder
    tokenizer, encoder = (text_encoder.from_folder(encoder_folder) if encoder_folder
                          else text_encoder.tiny(unet.config.cross_attention_dim, req.seed))
    to_graph = feeder(passes)
    writer = DatasetWriter(tmp, list(passes.meta["inputs"]), req.seed)

    def on_call(call: UnetCall) -> None:
        prompt = prompts[call.pick.prompt]
        writer.add(to_graph(call.inputs), {"prompt": prompt.text, "category": prompt.category,
                                           "step": call.pick.step, "branch": call.pick.branch,
                                           "timestep": call.timestep, "generator_seed": call.generator_seed})
        progress.note(f"{len(writer.samples)}/{len(picks)} samples recorded")

    record(pipeline(unet, tokenizer, encoder, schedule), schedule, prompts, picks, export.meta["resolution"],
           req.seed, on_call)
    stats = writer.close({"schedule": schedule.name, "weighting": settings.weighting,
                          "text_encoder": str(encoder_folder or "tiny seeded CLIP (not the real one)"),
                          "unet": "ONNX Runtime" if req.source.kind == "onnx" else "torch",
                          "timesteps": timesteps, "resolution": export.meta["resolution"]})
    return {"dataset": DATASET, "stats": STATS, "count": stats["count"]}


def _unet(req: BuildRequest, export: StageResult):
    """The UNet the sampler calls: the model in torch, or an ONNX UNet in ONNX Runtime (its model-level
    inputs are what the recorder keeps; the host programs turn them into the graph's)."""
    if req.source.kind != "onnx":
        return req.source.load_unet()
    session = onnx_runtime.session(export.path / export.meta["onnx"])
    output = session.get_outputs()[0].name
    specs = {name: (spec["shape"], spec["dtype"]) for name, spec in export.meta["inputs"].items()}
    return RuntimeUNet(config_from_specs(specs), lambda feed: {k: v.astype(specs[k][1]) for k, v in feed.items()},
                       lambda feeds: [onnx_runtime.run(session, f)[output] for f in feeds])
