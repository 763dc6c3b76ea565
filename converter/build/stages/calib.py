"""Stage `calib`: the UNet's real inputs along the deployed sampler's trajectories (calib_data/), as
the rewritten graph takes them (t_emb computed by the host programs), in RKNN's dataset format."""

from __future__ import annotations

from pathlib import Path

from calib_data import text_encoder
from calib_data.dataset_writer import DATASET, STATS, DatasetWriter
from calib_data.prompts import load_prompts
from calib_data.recorder import UnetCall, choose, pipeline, record, timesteps_of
from calib_data.schedules import get_schedule

from converter.build.build_dir import StageResult
from converter.build.request import BuildRequest
from converter.common.errors import UserError
from converter.common.progress import Progress
from converter.build.stages.reference import feeder


def run(req: BuildRequest, export: StageResult, passes: StageResult, progress: Progress, tmp: Path) -> dict:
    settings = req.calib
    if req.source.kind == "onnx":
        raise UserError(f"{req.source.path}: recording calibration inputs runs the UNet in torch; "
                        "give its diffusers folder or weights instead of an ONNX")
    schedule = get_schedule(settings.schedule)
    prompts = load_prompts(settings.prompts)
    timesteps = timesteps_of(schedule)
    try:
        picks = choose(prompts, schedule, timesteps, settings.samples, settings.trajectories, settings.weighting,
                       req.seed)
    except ValueError as e:
        raise UserError(f"--samples {settings.samples}: {e}; raise --trajectories") from None
    unet = req.source.load_unet()
    tokenizer, encoder = (text_encoder.from_folder(settings.text_encoder) if settings.text_encoder
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
                          "text_encoder": str(settings.text_encoder or "tiny seeded CLIP (not the real one)"),
                          "timesteps": timesteps, "resolution": export.meta["resolution"]})
    return {"dataset": DATASET, "stats": STATS, "count": stats["count"]}
