"""converter/toolkit/rknn_file.py refuses what is not an .rknn, naming the file and what is wrong.
(Its reading of real artifacts of every chip and dtype is checked beside their builds, in test_lowering.)"""

from __future__ import annotations

import json
import struct

import pytest

from converter.common.errors import UserError
from converter.toolkit.rknn_file import HEADER_BYTES, read


def test_a_real_artifact_reads_as_its_build_made_it(tiny_artifact_build):
    _, out = tiny_artifact_build
    report = json.loads((out / "report.json").read_text())
    declared = read(out / report["artifact"])
    assert declared.to_json() == report["rknn_file"]
    assert declared.target == "rk3588" and declared.source_format == "ONNX" and declared.format_version == 6
    assert declared.inputs[0] == {"name": "sample", "shape": report["inputs"]["sample"]["shape"], "dtype": "float16",
                                  "layout": "NHWC"}
    assert declared.op_counts["InputOperator"] == len(report["inputs"])


def _refused(path, why: str):
    with pytest.raises(UserError) as e:
        read(path)
    assert str(e.value) == f"{path}: not an .rknn file ({why})"


def test_what_is_not_an_rknn_is_refused_in_one_line(tiny_artifact_build, tmp_path):
    _, out = tiny_artifact_build
    report = json.loads((out / "report.json").read_text())
    whole = (out / report["artifact"]).read_bytes()
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(64))
    _refused(cases / "model.onnx", "starts with b'\\x08\\x07\\x12\\x07', not b'RKNN'")
    (cases / "short.rknn").write_bytes(whole[:40])
    _refused(cases / "short.rknn", f"40 bytes, shorter than the {HEADER_BYTES}-byte header")
    length = struct.unpack_from("<Q", whole, 16)[0]
    (cases / "cut.rknn").write_bytes(whole[:len(whole) // 2])
    _refused(cases / "cut.rknn", f"truncated: the header promises {length:,} bytes of model, the file has "
                                 f"{len(whole) // 2:,}")
    (cases / "old.rknn").write_bytes(whole[:8] + struct.pack("<Q", 1) + whole[16:])
    _refused(cases / "old.rknn", "format version 1; this reader knows 6, rknn-toolkit2 2.x")
    (cases / "trailer.rknn").write_bytes(whole[:-3] + b"}}}")
    _refused(cases / "trailer.rknn", "its JSON trailer does not parse")
    with pytest.raises(UserError, match="cannot read"):
        read(cases / "missing.rknn")
