"""Stage `layers`: every layer the simulator dumped, against ONNX Runtime (converter/reports/layer_report.py)."""

from __future__ import annotations

import json
from pathlib import Path

from converter.pipeline.build_dir import StageResult
from converter.pipeline.stages import reference as reference_stage
from converter.reports.layer_report import analyse

ROWS = "layers.json"


def run(passes: StageResult, reference: StageResult, rknn: StageResult, tmp: Path) -> dict:
    rows = analyse(rknn.path / rknn.meta["snapshot"], passes.path / passes.meta["onnx"],
                   reference_stage.feed(reference, 0), tmp / "scratch")
    (tmp / "scratch").rmdir()
    (tmp / ROWS).write_text(json.dumps(rows))
    return {"rows": ROWS, "count": len(rows), "unmapped": sum(r["mapping"] == "unmapped" for r in rows)}


def rows(layers: StageResult) -> list[dict]:
    return json.loads((layers.path / layers.meta["rows"]).read_text())
