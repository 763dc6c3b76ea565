"""Stage `calib`: the UNet's real inputs along the deployed sampler's trajectories (calib_data/), as
the rewritten graph takes them (t_emb computed by the host programs), in RKNN's dataset format."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from calib_data.dataset_writer import DATASET, STATS, DatasetWriter
from calib_data.prompts import load_prompts
from calib_data.schedules import get_schedule, prediction_of
from converter.builds.build_dir import StageOutput, StageResult
from converter.builds.request import CalibSettings
from converter.builds.stage_run import StageRunner
from converter.builds.stages.export import Exported
from converter.builds.stages.passes import Rewritten
from converter.common import onnx_runtime
from converter.common.errors import UserError
from converter.common.progress import Progress
from converter.imaging.evaluation import declared_prompts
from converter.models.family import Signature
from converter.models.model_source import ModelSource
from converter.models.unet_interface import specs_from_json


@dataclass(frozen=True)
class Calibration(StageOutput):
    dataset: Path  # RKNN's dataset file
    stats: Path  # calib.json: per-input statistics, overall and per timestep
    count: int

    @classmethod
    def read(cls, record: StageResult) -> Calibration:
        meta = record.meta
        return cls(record, record.path / meta["dataset"], record.path / meta["stats"], meta["count"])

    @property
    def datasets(self) -> list[Path]:
        """What each toolkit build calibrates on: the one dataset of a graph built whole."""
        return [self.dataset]

    def summary(self) -> dict:
        return {"dataset": self.dataset.name, "stats": self.stats.name, "count": self.count}


def stage(runner: StageRunner, source: ModelSource, settings: CalibSettings, seed: int, export: Exported,
          passes: Rewritten, name: str = "calib") -> Calibration:
    """UNet inputs recorded along the sampler's trajectories (as another stage: `checkset`, the held-out check
    inputs)."""
    what = f"{settings.samples} inputs along {settings.schedule} trajectories"
    return Calibration.read(runner.run(
        name, what, {"calib": settings.fingerprint(), "seed": seed}, [export, passes],
        lambda tmp: run(source, settings, seed, export, passes, runner.progress, tmp)))


def run(source: ModelSource, settings: CalibSettings, seed: int, export: Exported, passes: Rewritten,
        progress: Progress, tmp: Path) -> dict:
    # torch and diffusers: imported by the stage that runs them, not by whoever reads its results
    from calib_data import text_encoder
    from calib_data.recorder import UnetCall, choose, pipeline, record, timesteps_of

    signature = export.signature
    if signature.sdxl:
        raise UserError(f"{source.spec}: an SDXL UNet; its calibration inputs come from SDXL's pipeline, which "
                        "rkconvert does not run: build it as float16")
    unet = _unet(source, export, signature)
    folder = source.pipeline
    schedule = replace(get_schedule(settings.schedule), embedded_guidance=signature.embeds_guidance,
                       prediction_type=prediction_of(folder))
    prompts = load_prompts(settings.prompts or (declared_prompts(folder) if folder else None))
    timesteps = timesteps_of(schedule)
    try:
        picks = choose(prompts, schedule, timesteps, settings.samples, settings.trajectories, settings.weighting, seed)
    except ValueError as e:
        raise UserError(f"--samples {settings.samples}: {e}; raise --trajectories") from None
    encoder_folder = settings.text_encoder or folder
    tokenizer, encoder = (text_encoder.from_folder(encoder_folder) if encoder_folder
                          else text_encoder.tiny(unet.config.cross_attention_dim, seed))
    to_graph = passes.feeder()
    writer = DatasetWriter(tmp, passes.input_names, seed)

    def on_call(call: UnetCall) -> None:
        prompt = prompts[call.pick.prompt]
        writer.add(to_graph(call.inputs), {"prompt": prompt.text, "category": prompt.category,
                                           "step": call.pick.step, "branch": call.pick.branch,
                                           "timestep": call.timestep, "generator_seed": call.generator_seed})
        progress.note(f"{len(writer.samples)}/{len(picks)} samples recorded")

    record(pipeline(unet, tokenizer, encoder, schedule), schedule, prompts, picks, export.resolution, seed,
           signature.rows, on_call)
    stats = writer.close({"schedule": schedule.name, "weighting": settings.weighting,
                          "text_encoder": str(encoder_folder or "tiny seeded CLIP (not the real one)"),
                          "unet": "ONNX Runtime" if source.kind == "onnx" else "torch",
                          "timesteps": timesteps, "resolution": export.resolution})
    return {"dataset": DATASET, "stats": STATS, "count": stats["count"]}


def _unet(source: ModelSource, export: Exported, signature: Signature):
    """The UNet the sampler calls: the model in torch, or an ONNX UNet in ONNX Runtime (its model-level
    inputs are what the recorder keeps; the host programs turn them into the graph's)."""
    if source.kind != "onnx":
        return source.load_unet()
    from converter.imaging.runtime_unet import RuntimeUNet

    session = onnx_runtime.session(export.onnx)
    output = session.get_outputs()[0].name
    specs = specs_from_json(export.inputs)
    return RuntimeUNet(signature, lambda feed: {k: v.astype(specs[k][1]) for k, v in feed.items()},
                       lambda feeds: [onnx_runtime.run(session, f)[output] for f in feeds])
