"""Stage `pipeline-models`: a model that draws has a text encoder and a VAE decoder beside its UNet (and the VAE's
encoder, to redraw a picture), traced here to ONNX at the build's resolution. The board runs them from this stage's files (onnxruntime) or from
their own `.rknn` builds (build/npu_models.py), and `release` ships these bytes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converter.builds.build_dir import StageOutput, StageResult
from converter.builds.stage_run import StageRunner
from converter.models.family import TRACED_MODELS
from converter.models.model_source import ModelSource


@dataclass(frozen=True)
class Traced(StageOutput):
    onnx: dict[str, Path]  # family.TRACED_MODELS name -> its ONNX
    latent_shape: list[int]
    vae_scaling_factor: float

    @classmethod
    def read(cls, record: StageResult) -> Traced:
        meta = record.meta
        return cls(record, {name: record.path / f"{name}.onnx" for name in TRACED_MODELS},
                   meta["latent_shape"], meta["vae_scaling_factor"])


def stage(runner: StageRunner, source: ModelSource, resolution: int) -> Traced:
    """The text encoder and VAE decoder of a model that draws (`source`), as ONNX at `resolution`, the size
    its UNet was exported at."""
    # Keyed by the source and that size (not by chaining on `export`, which is keyed by the size asked): the
    # model's default size and the same size asked for trace the same models.
    what = f"text encoder and VAE decoder and encoder to ONNX at {resolution} px"
    return Traced.read(runner.run("pipeline-models", what, {"source": source.fingerprint(), "resolution": resolution},
                                  [], lambda tmp: run(source.pipeline, resolution, tmp)))


def run(folder: Path, resolution: int, tmp: Path) -> dict:
    from converter.models import pipeline_models  # torch: only a build that traces them pays its import

    return pipeline_models.export(folder, resolution, tmp)
