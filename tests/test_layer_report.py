"""The per-layer report: numbers that can be recomputed by hand, a broken layer that stands out,
a page that renders, a gate that names the layer, and two builds side by side."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from converter.builds.build_dir import finished_stage
from converter.builds.builder import build
from converter.builds.request import BuildRequest, Gates
from converter.builds.stages.layers import LayerRows
from converter.builds.stages.reference import Reference
from converter.common import onnx_runtime
from converter.common.accuracy import compare
from converter.common.progress import Progress
from converter.models.model_source import resolve
from converter.reports.build_report import load_build
from converter.reports.compare_builds import cost_rows
from converter.reports.layer_report import analyse, worst_first
from converter.toolkit.snapshot import load_dump, read_layers
from targets import get_chip
from tests.conftest import error_lines, rkconvert
from tests.rknn_helpers import simulate

STAGES = Path("stages")


def _rows(out: Path) -> list[dict]:
    return LayerRows.read(finished_stage(out, "layers")).rows


def _feed(out: Path) -> dict[str, np.ndarray]:
    return Reference.read(finished_stage(out, "reference")).feed(0)


def test_metrics_of_one_layer_recomputed_by_hand(tiny_build, tmp_path):
    _, result, out, report = tiny_build
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    assert report["layers"] and len(report["layers"]) == len(rows) > 100
    tensor = "/down_blocks.0/resnets.0/conv1/Conv_output_0"
    (row,) = [r for r in rows if r["layer"] == tensor]
    assert row["mapping"] == "exact" and row["module"] == "down_blocks.0.resnets.0.conv1"

    snapshot = out / STAGES / "rknn" / "snapshot"
    (layer,) = [la for la in read_layers(snapshot) if la.name == tensor]
    simulator = load_dump(snapshot, "simulator", layer).astype(np.float64)
    ref = onnx_runtime.run_with_tensors(out / STAGES / "passes" / "model.onnx", _feed(out), [tensor],
                                        tmp_path / "scratch")[tensor].astype(np.float64).ravel()
    err = simulator - ref
    assert row["cosine"] == pytest.approx(simulator @ ref / np.linalg.norm(simulator) / np.linalg.norm(ref), abs=1e-9)
    assert row["sqnr_db"] == pytest.approx(10 * np.log10((ref**2).sum() / (err**2).sum()), rel=1e-6)
    assert row["psnr_db"] == pytest.approx(20 * np.log10(np.abs(ref).max() / np.sqrt((err**2).mean())), rel=1e-6)
    assert row["max_abs"] == pytest.approx(np.abs(err).max(), rel=1e-6)
    assert row["mean_abs"] == pytest.approx(np.abs(err).mean(), rel=1e-6)
    assert row["rel_error"] == pytest.approx(np.linalg.norm(err) / np.linalg.norm(ref), rel=1e-6)
    assert row["single_cos"] == layer.single_cos and 0 < row["max_abs"] < 0.05


def test_a_corrupted_layer_is_the_worst_row(tiny_build, tmp_path):
    """Weights broken in what the toolkit builds, reference kept clean: the report must point there."""
    _, _, out, _ = tiny_build
    clean = out / STAGES / "passes" / "model.onnx"
    model = onnx.load(str(clean))
    target = "down_blocks.1.resnets.0.conv2.weight"
    (init,) = [t for t in model.graph.initializer if t.name == target]
    w = numpy_helper.to_array(init)
    noise = np.random.default_rng(0).standard_normal(w.shape).astype(np.float32) * w.std() * 3
    init.CopyFrom(numpy_helper.from_array(w + noise, target))

    feed = _feed(out)
    _, rknn_dir = simulate(tmp_path / "corrupted", model, feed, layer_dumps=True)
    rows = analyse(rknn_dir / "snapshot", clean, feed, tmp_path / "scratch")
    worst = worst_first(rows)[0]
    assert worst["module"] == "down_blocks.1.resnets.0.conv2", worst
    assert worst["cosine"] < 0.9
    clean_rows = {r["layer"]: r for r in _rows(out)}
    assert clean_rows[worst["layer"]]["cosine"] > 0.9999


def test_partial_sums_of_a_tiled_convolution_are_not_taken_for_it(tmp_path):
    """The toolkit splits a 1280-input-channel convolution into tiles and sums them one by one: the
    later partial sums resemble the whole convolution, but no ONNX tensor holds them."""
    cin, cout, side = 1280, 64, 4
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
    conv = "/conv1/Conv_output_0"
    nodes = [helper.make_node("Conv", ["x", "w"], [conv], name="/conv1/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", [conv], ["y"], name="/act/Relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, side, side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, side, side])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feed = {"x": rng.standard_normal((1, cin, side, side)).astype(np.float32)}
    _, rknn_dir = simulate(tmp_path / "tiled", model, feed, layer_dumps=True)
    rows = analyse(rknn_dir / "snapshot", tmp_path / "tiled" / "model.onnx", feed, tmp_path / "scratch")

    partial = [r for r in rows if "_tile" in r["layer"]]
    assert len(partial) > 2
    assert all(r["mapping"] == "unmapped" and "split into tiles" in r["why_unmapped"] for r in partial)
    whole = onnx_runtime.run_with_tensors(tmp_path / "tiled" / "model.onnx", feed, [conv], tmp_path / "scratch")[conv]
    (snapshot_layer,) = [la for la in read_layers(rknn_dir / "snapshot") if la.name == partial[-1]["layer"]]
    resemblance = compare(load_dump(rknn_dir / "snapshot", "golden", snapshot_layer), whole)["cosine"]
    assert 0.9 < resemblance < 0.99  # close enough to pass for the convolution under MATCH_COS
    (row,) = [r for r in rows if r["layer"] == conv]
    assert row["mapping"] == "exact" and row["cosine"] > 0.9999


def test_layer_gate_names_the_first_layer_under_it(tiny_build, tmp_path):
    work, _, out, _ = tiny_build
    rows = _rows(out)
    gate = sorted(r["cosine"] for r in rows if r["mapping"] != "unmapped")[len(rows) // 2]
    first = next(r for r in rows if r["mapping"] != "unmapped" and r["cosine"] < gate)
    gated = tmp_path / "gated"  # a copy (its stages reused): tests in other files read the build's own folder
    shutil.copytree(out, gated)
    result = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--min-layer-cos", repr(gate),
                       "--out", str(gated), cwd=work)
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert f"layer {first['layer']} ({first['module'] or first['onnx_tensor']})" in line
    assert f"under --min-layer-cos {gate:g}" in line
    assert not list(gated.glob("*.rknn"))


def test_compare_pairs_every_layer_of_two_builds(tiny_build, tmp_path):
    work, _, out, _ = tiny_build
    other = work / "seed1"
    result = rkconvert("build", "--target", "rk3588", "--model", "tiny-unet", "--seed", "1", "--out", str(other), cwd=work)
    assert result.returncode == 0, result.stderr
    shown = rkconvert("compare", str(out), str(other), "--top", "5", "--json", str(tmp_path / "c.json"), cwd=work)
    assert shown.returncode == 0, shown.stderr
    assert "output_psnr_db" in shown.stdout and "layers only in A: 0, only in B: 0" in shown.stdout
    # Same architecture, other weights: the toolkit's cost estimate does not move.
    assert "estimated cycles" in shown.stdout and "not measured on a board" in shown.stdout
    assert all(row[3] == "+0.0%" for row in cost_rows(load_build(out).to_json(), load_build(other).to_json()))
    joined = json.loads((tmp_path / "c.json").read_text())["layers"]
    assert len(joined) == len(_rows(out))
    deltas = [j["delta_sqnr_db"] for j in joined if j["delta_sqnr_db"] is not None]
    assert len(deltas) > 100 and any(abs(d) > 0.01 for d in deltas)

    bad = rkconvert("compare", str(out), str(tmp_path), cwd=work)
    assert bad.returncode == 2 and error_lines(bad) == [f"rkconvert: error: {tmp_path}: no report.json (not an rkconvert build folder)"]


def test_compare_puts_the_cost_estimates_side_by_side():
    def report(cycles, seconds, traffic, buffer=None):
        cost = {"total_cycles": cycles, "estimated_seconds_per_step": seconds, "internal_bytes": 1000,
                "attention_traffic": {"dram_bytes": traffic}}
        return {"cost": cost | ({} if buffer is None else {"largest_attention_buffer_bytes": buffer})}

    rows = cost_rows(report(100, 1e-3, 4096, 800), report(150, 1.5e-3, 1024, 200))
    assert rows == [("estimated cycles", "100", "150", "+50.0%"), ("estimated ms per step", "1.000", "1.500", "+50.0%"),
                    ("internal memory bytes", "1,000", "1,000", "+0.0%"),
                    ("largest attention buffer bytes", "800", "200", "-75.0%"),
                    ("attention DRAM bytes (model)", "4,096", "1,024", "-75.0%")]
    # A row neither build carries (a model without attention) is left out; one side missing shows blank.
    assert [r[0] for r in cost_rows(report(1, 1, 1), report(1, 1, 1))] == [
        "estimated cycles", "estimated ms per step", "internal memory bytes", "attention DRAM bytes (model)"]
    assert cost_rows(report(1, 1, 1, 5), report(1, 1, 1))[3] == ("largest attention buffer bytes", "5", "", "")
    assert cost_rows(report(1, 1, 1), {}) == []  # a report without the estimate: nothing to compare


def test_large_graphs_skip_layer_dumps_unless_asked(tmp_path, monkeypatch, tiny_folder):
    from converter.builds import plan
    from converter.common.errors import BuildFailed

    monkeypatch.setattr(plan, "AUTO_LAYER_DUMP_LIMIT", 0)
    req = BuildRequest(resolve(str(tiny_folder)), get_chip("rk3588"), tmp_path / "out", gates=Gates(min_layer_cos=0.5))
    with pytest.raises(BuildFailed, match="--min-layer-cos needs the per-layer report"):
        build(req, Progress(Console(file=open(tmp_path / "log.txt", "w"))))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "per-layer dumps would take" in report["layers_skipped"] and report["layers"] is None
    assert not (tmp_path / "out" / STAGES / "rknn" / "snapshot").exists()


def test_html_report_renders_in_chromium_and_names_every_layer(demo_build, tmp_path):
    result, demo_build = demo_build
    assert result.returncode == 0, result.stderr
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is part of the test setup (Makefile: make test installs it)"
    page = demo_build / "report.html"
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    report = json.loads((demo_build / "report.json").read_text())
    rows = report["layers"]
    assert len(rows) > 500
    layers = dom.split('<table id="layers">')[1].split("</table>")[0]
    assert layers.count("<tr>") == len(rows) + 1  # header + one per layer
    missing = [r["layer"] for r in rows if f">{r['layer']}<" not in layers]
    assert not missing, missing[:5]
    assert dom.count("<circle") == sum(r.get("sqnr_db") is not None for r in rows)
    first_body_row = layers.split("<tbody>")[1].split("</tr>")[0]
    assert f">{worst_first(rows)[0]['index']}<" in first_body_row
    cpu_rows = dom.split('<table id="cpu">')[1].split("</table>")[0].count("<tr>") - 1 if report["cpu_ops"] else 0
    assert cpu_rows == report["cpu_ops"]
    assert f"{report['cpu_ops']} compute layers fell back to the CPU" in dom
    assert report["cpu_ops"] == 0  # group_norm_as_conv keeps the 2x2 stage's GroupNorms on the NPU
    pictures = dom.split('<table id="image-rows">')[1].split("</table>")[0]
    assert pictures.count("<tr>") == len(report["images"]["rows"]) + 1
    sources = re.findall(r'<img src="([^"]+)"', pictures)
    assert len(sources) == 3 * len(report["images"]["rows"])
    assert all((demo_build / src).is_file() for src in sources)
    assert "prompt accuracy" in dom.lower()
    declared = dom.split('<table id="declared-io">')[1].split("</table>")[0]
    assert declared.count("<tr>") == 1 + len(report["inputs"]) + 1  # header, inputs, the one output
    assert "target rk3588, rknn-toolkit2 2.5.0" in dom
    cost = report["cost"]
    modules = dom.split('<table id="cost-modules">')[1].split("</table>")[0]
    assert modules.count("<tr>") == len(cost["per_module"]) + 1
    attention = dom.split('<table id="cost-attention">')[1].split("</table>")[0]
    assert attention.count("<tr>") == cost["attention_layers"] + 1 == len(cost["attention_traffic"]["layers"]) + 1
    assert "not measured on a board" in dom.split('id="cost"')[1][:200]


def test_layers_the_toolkit_renamed_pair_by_onnx_tensor():
    from converter.reports.compare_builds import join_layers

    a = [{"layer": "x_mm", "onnx_tensor": "x", "module": "m", "sqnr_db": 60.0},
         {"layer": "y_split", "onnx_tensor": None, "module": "", "sqnr_db": None}]
    b = [{"layer": "x_mm_tp", "onnx_tensor": "x", "module": "m", "sqnr_db": 50.0},
         {"layer": "z", "onnx_tensor": "z", "module": "n", "sqnr_db": 40.0}]
    joined = join_layers(a, b)
    assert [(j["key"], j["a"] is not None, j["b"] is not None, j["delta_sqnr_db"]) for j in joined] == [
        ("x_mm", True, True, -10.0), ("y_split", True, False, None), ("z", False, True, None)]


def test_the_worst_layers_show_their_numbers_in_a_log_80_columns_wide(tiny_build):
    """`make demo` writes into a pipe: no TTY, 80 columns. Every row keeps its numbers there, on one line,
    and its module's head and tail (report.json keeps the whole name)."""
    from io import StringIO

    from converter.reports.report import WORST_SHOWN, print_layers, shortened

    _, _, _, report = tiny_build
    out = StringIO()
    print_layers(Console(file=out, width=80, force_terminal=False), report["layers"])
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    worst = worst_first(report["layers"])[:WORST_SHOWN]
    assert max(len(line) for line in lines) <= 80
    assert len(lines) == 3 + len(worst)  # title, headings, rule, then one line per layer
    for line, row in zip(lines[3:], worst):
        assert line.lstrip().startswith(f"{row['index']} ")
        for value in (f"{row['added_noise_db']:.1f}", f"{row['cosine']:.6f}", f"{row['sqnr_db']:.1f}", row["op"]):
            assert value in line, (value, line)
        name = line.split()[-1]
        assert name == shortened(row["module"] or row["layer"], len(name))
    assert any("…" in line for line in lines[3:])  # diffusers' module paths do not fit whole at 80 columns
    assert shortened("up_blocks.1.attentions.1.transformer_blocks.0.ff.net.0", 22) == "up_blocks.1…0.ff.net.0"

