"""Stage `passes`: the target's graph rewrites, in order; host programs saved beside the graph."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converter.builds.build_dir import StageOutput, StageResult
from converter.builds.host_programs import GraphFeeder
from converter.builds.pass_selection import TILE_ATTENTION, instances
from converter.builds.stage_run import StageRunner
from converter.builds.stages.export import Exported
from converter.common import onnx_files
from converter.models.unet_interface import graph_inputs, specs_of, specs_to_json
from graph_passes import GraphPass
from targets.chip import Chip


@dataclass(frozen=True)
class Rewritten(StageOutput):
    onnx: Path
    onnx_bytes: int  # the graph and its weights on disk
    passes: list[dict]  # what each pass did (GraphPass reports)
    host_programs: list[str]  # relative to the stage folder: host/<name>.onnx, run before the graph
    inputs: dict  # the rewritten graph's inputs: name -> {"shape", "dtype"}
    outputs: list[str]

    @classmethod
    def read(cls, record: StageResult) -> Rewritten:
        meta = record.meta
        return cls(record, record.path / meta["onnx"], meta["onnx_bytes"], meta["passes"], meta["host_programs"],
                   meta["inputs"], meta["outputs"])

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    def feeder(self) -> GraphFeeder:
        """Model-level inputs (sample, timestep, ...) -> the rewritten graph's inputs."""
        return GraphFeeder([self.path / p for p in self.host_programs], self.input_names)


def stage(runner: StageRunner, exported: Exported, names: list[str], chip: Chip, attention_tiles: str,
          name: str = "passes") -> Rewritten:
    """The graph passes `names` on `exported` (as another stage: `proxy-passes`, on a proxy's export)."""
    key = {"passes": names, "attention_tiles": attention_tiles if TILE_ATTENTION in names else None}
    return Rewritten.read(runner.run(name, ", ".join(names) or "none", key, [exported],
                                     lambda tmp: run(exported.onnx, instances(names, chip, attention_tiles), tmp)))


def run(onnx_path: Path, passes: list[GraphPass], tmp: Path) -> dict:
    model = onnx_files.load_lazy(onnx_path)
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
