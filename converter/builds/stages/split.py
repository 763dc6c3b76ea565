"""Stage `split` (--parts N): the passes' graph cut into N consecutive parts, each saved as an ONNX model
with its own weights, for one toolkit build each (converter/builds/graph_cut.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converter.builds import graph_cut
from converter.builds.build_dir import StageOutput, StageResult
from converter.builds.stage_run import StageRunner
from converter.builds.stages.passes import Rewritten
from converter.common import onnx_files
from converter.common.errors import BuildFailed


@dataclass(frozen=True)
class Part:
    onnx: Path
    inputs: list[str]  # the graph's inputs and earlier parts' outputs, by name
    outputs: list[str]
    weight_bytes: int


@dataclass(frozen=True)
class Split(StageOutput):
    parts: list[Part]  # in run order

    @classmethod
    def read(cls, record: StageResult) -> Split:
        return cls(record, [Part(record.path / p["onnx"], p["inputs"], p["outputs"], p["weight_bytes"])
                            for p in record.meta["parts"]])


def stage(runner: StageRunner, rewritten: Rewritten, parts: int) -> Split | None:
    """Under --parts N (N > 1), the graph the toolkit gets as N parts; None for a whole model."""
    if parts == 1:
        return None
    return Split.read(runner.run("split", f"the graph cut into {parts} parts of about equal weight",
                                 {"parts": parts}, [rewritten], lambda tmp: run(rewritten.onnx, parts, tmp)))


def run(onnx_path: Path, count: int, tmp: Path) -> dict:
    try:
        parts = graph_cut.parts(onnx_files.load_lazy(onnx_path), count)
    except ValueError as e:
        raise BuildFailed(f"--parts {count}: {e}") from None
    described = []
    for i, part in enumerate(parts, start=1):
        (tmp / f"part{i}").mkdir()
        weights = onnx_files.weight_bytes(part.model)
        onnx_files.save(part.model, tmp / f"part{i}" / "model.onnx")
        described.append({"onnx": f"part{i}/model.onnx", "inputs": part.inputs, "outputs": part.outputs,
                          "weight_bytes": weights})
    return {"parts": described}
