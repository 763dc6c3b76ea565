"""Stage `split` (--parts N): the passes' graph cut into N consecutive parts, each saved as an ONNX model
with its own weights, for one toolkit build each (converter/pipeline/graph_cut.py)."""

from __future__ import annotations

from pathlib import Path

from converter.pipeline import graph_cut
from converter.pipeline.build_dir import StageResult
from converter.common import onnx_files
from converter.common.errors import BuildFailed


def run(passes: StageResult, count: int, tmp: Path) -> dict:
    try:
        parts = graph_cut.parts(onnx_files.load_lazy(passes.path / passes.meta["onnx"]), count)
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
