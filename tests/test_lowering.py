"""Each chip's dtypes build on a tiny W8A16 UNet and meet their gates; what a chip cannot do is refused
with the reason and what it can do."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from rich.console import Console

from converter.builds.builder import build
from converter.builds.request import BuildRequest, CalibSettings, Checks, Gates, HybridSettings
from converter.common.errors import UserError
from converter.common.progress import Progress
from converter.models.model_source import resolve
from converter.toolkit import driver
from targets import get_chip
from tests.conftest import error_lines, rkconvert

# float16 is exact up to fp16 rounding, and so is w8a16 on a W8A16 checkpoint (its int8 weights are kept:
# 75.4 dB measured on rk3562); int8 activations of a random-weight UNet lose more, int4 weights more still.
GATES = {"float16": 60.0, "w8a16": 60.0, "w8a8": 30.0, "w4a16": 20.0}
# The toolkit's layer table gives each layer's activation dtype (w4a16's int4 weights do not show there).
ACTIVATIONS = {"float16": "FLOAT16", "w8a16": "FLOAT16", "w8a8": "INT8", "w4a16": "FLOAT16"}
# The dtype holding most of the file's constants: the weights.
WEIGHTS = {"float16": "float16", "w8a16": "int8", "w8a8": "int8", "w4a16": "int4"}
# auto: rk3588 has no w8a16, so the checkpoint's weights run dequantized exactly, in float16; rk3562 builds
# w8a16 (with pad_conv_channels: its compiler dies on conv_in and conv_out as they are).
LOWERINGS = [("rk3588", "auto"), ("rk3588", "w8a8"), ("rk3576", "w8a8"), ("rk3576", "w4a16"), ("rk3562", "auto")]
BUILT_AS = {("rk3588", "auto"): "float16", ("rk3562", "auto"): "w8a16"}


@pytest.fixture(scope="module")
def w8a16_folder(tiny_build, tmp_path_factory):
    work, _, _, _ = tiny_build
    out = tmp_path_factory.mktemp("lowering") / "tiny-w8a16"
    assert rkconvert("quantize", "--model", "tiny-unet", "--out", str(out), cwd=work).returncode == 0
    return out


@pytest.mark.parametrize("target, dtype", LOWERINGS)
def test_lowering_builds_and_meets_its_gate(target, dtype, w8a16_folder, tmp_path):
    built = BUILT_AS.get((target, dtype), dtype)
    req = BuildRequest(resolve(str(w8a16_folder)), get_chip(target), tmp_path / "out", dtype=dtype,
                       gates=Gates(min_psnr=GATES[built]), checks=Checks(samples=2, layer_report="off"),
                       hybrid=HybridSettings(enabled=False), calib=CalibSettings(samples=6, trajectories=2))
    report = build(req, Progress(Console(file=open(tmp_path / "progress.txt", "w")))).to_json()
    assert report["status"] == "ok" and report["target"] == target and report["dtype"] == built
    assert report["output_psnr_db"] >= GATES[built]
    assert (report["dtype_choice"] is not None) == (dtype == "auto")
    assert report["weights"].startswith("w8a16:")
    assert ("pad_conv_channels" in [p["pass"] for p in report["passes"]]) == (built == "w8a16")
    dtypes = {r["dtype"] for r in report["placement"] if r["op"] not in ("InputOperator", "OutputOperator")}
    assert ACTIVATIONS[built] in dtypes, dtypes
    # The artifact's own account (converter/toolkit/rknn_file.py) agrees with the build and its layer table.
    declared = report["rknn_file"]
    assert (declared["target"], declared["toolkit_version"]) == (target, driver.toolkit_version())
    assert {t["dtype"] for t in declared["inputs"] + declared["outputs"]} == {ACTIVATIONS[built].lower()}
    assert {t["name"]: t["shape"] for t in declared["inputs"]} == {k: v["shape"] for k, v in report["inputs"].items()}
    assert declared["op_counts"] == dict(Counter(r["op"] for r in report["placement"]))
    assert max(declared["constant_bytes"], key=declared["constant_bytes"].get) == WEIGHTS[built]
    flash = target != "rk3588" and ACTIVATIONS[built] == "FLOAT16"
    assert report["toolkit_config"] == ({"enable_flash_attention": True} if flash else {})
    assert ("enable_flash_attention=1" in (tmp_path / "out" / "logs" / "rknn.log").read_text()) == flash


def test_auto_keeps_the_models_own_precision():
    rk3588 = get_chip("rk3588")
    assert rk3588.auto_dtype(w8a16_checkpoint=False)[0] == "float16"
    dtype, why = rk3588.auto_dtype(w8a16_checkpoint=True)
    assert dtype == "float16" and "--dtype w8a8" in why
    # A chip whose toolkit builds w8a16 gets the checkpoint's own precision; w4a16 would lose bits.
    assert replace(rk3588, dtypes=("float16", "w8a8", "w8a16")).auto_dtype(True)[0] == "w8a16"
    assert get_chip("rk3576").auto_dtype(True)[0] == "float16"
    assert get_chip("rk3562").auto_dtype(True)[0] == "w8a16"


@pytest.mark.parametrize("target, dtype, reason", [
    ("rk3588", "w8a16", "refuses w8a16 for rk3588 at config() (it offers it for rk3562)"),
    ("rk3562", "w4a16", "offers w4a16 for rk3576 and rv1126b only"),
    ("rk3588", "int3", "not an RKNN dtype rkconvert builds"),
])
def test_what_a_chip_cannot_do_is_refused_naming_what_it_can(target, dtype, reason, tiny_build):
    work, _, _, _ = tiny_build
    result = rkconvert("build", "--target", target, "--model", "tiny-unet", "--dtype", dtype, cwd=work)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert f"--dtype {dtype} for {target}: " in line and reason in line
    assert line.endswith(f"{target} builds {', '.join(get_chip(target).dtypes)}")
    with pytest.raises(UserError):
        build(BuildRequest(resolve("demo"), get_chip(target), work / "never", dtype=dtype), Progress(Console()))
    assert not (work / "never").exists()
