"""Stage `passes`: the target's graph rewrites, in order; host programs saved beside the graph."""

from __future__ import annotations

from pathlib import Path

from converter.pipeline.build_dir import StageResult
from converter.common import onnx_files
from converter.models.unet_interface import graph_inputs, specs_of, specs_to_json
from graph_passes import GraphPass


def run(export: StageResult, passes: list[GraphPass], tmp: Path) -> dict:
    model = onnx_files.load_lazy(export.path / export.meta["onnx"])
    reports, programs = [], []
    (tmp / "host").mkdir()
    for graph_pass in passes:
        model, report, host = graph_pass.run(model)
        reports.append(report.as_dict())
        for program in host:
            path = tmp / "host" / f"{program.name}.onnx"
            onnx_files.save(program.model, path)
            programs.append(f"host/{path.name}")
    files = onnx_files.save(model, tmp / "model.onnx")
    return {
        "onnx": "model.onnx",
        "onnx_bytes": sum(f.stat().st_size for f in files),
        "passes": reports,
        "host_programs": programs,
        "inputs": specs_to_json(specs_of(graph_inputs(model))),
        "outputs": [o.name for o in model.graph.output],
    }
