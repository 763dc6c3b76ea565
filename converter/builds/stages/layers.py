"""Stage `layers`: every layer the simulator dumped, against ONNX Runtime (converter/reports/layer_report.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from converter.builds.build_dir import StageOutput, StageResult
from converter.builds.stage_run import StageRunner
from converter.builds.stages.passes import Rewritten
from converter.builds.stages.reference import Reference
from converter.builds.stages.rknn import Converted
from converter.reports.layer_report import analyse

ROWS = "layers.json"


@dataclass(frozen=True)
class LayerRows(StageOutput):
    rows: list[dict]  # the per-layer report's rows, in the toolkit's execution order

    @classmethod
    def read(cls, record: StageResult) -> LayerRows:
        return cls(record, json.loads((record.path / record.meta["rows"]).read_text()))


def stage(runner: StageRunner, rewritten: Rewritten, reference: Reference, rknn: Converted) -> list[dict]:
    """The per-layer report's rows of an `rknn` stage built with dumps."""
    return LayerRows.read(runner.run("layers", "every layer against ONNX Runtime", {}, [rewritten, reference, rknn],
                                     lambda tmp: run(rewritten, reference, rknn, tmp))).rows


def run(passes: Rewritten, reference: Reference, rknn: Converted, tmp: Path) -> dict:
    rows = analyse(rknn.snapshot, passes.onnx, reference.feed(0), tmp / "scratch")
    (tmp / "scratch").rmdir()
    (tmp / ROWS).write_text(json.dumps(rows))
    return {"rows": ROWS, "count": len(rows), "unmapped": sum(r["mapping"] == "unmapped" for r in rows)}
