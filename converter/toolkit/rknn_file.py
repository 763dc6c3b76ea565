"""What a `.rknn` file says about itself: target, toolkit and compiler versions, inputs and outputs,
operator counts, constant bytes by dtype. Reports and manifests take these from the artifact, not
from what the build asked for.

The layout (rknn-toolkit2 2.x, not documented by Rockchip; the PyPI package `rknncli` reads it the
same way and supplies the FlatBuffer schema used here): a 64-byte header ("RKNN", 4 zero bytes, u64
format version, u64 length of what follows), a FlatBuffer (identifier "RKNN": `Format`, `Compiler`,
`Runtime` = target platform, `InputJson` / `OutputJson` with each tensor's runtime dtype and layout,
`Generator` with the source model's input shapes, graphs of nodes and tensors), then a u64 length and
a JSON trailer (`target_platform`, toolkit `version`). The file is memory-mapped: an SD 1.5 `.rknn`
is 1.8 GB and only its tables are read.

Tensor dtype codes are not named in the schema; the names below were inferred from 2.5.0 files of
every dtype rkconvert builds (float16, w8a8, w4a16 on rk3588 / rk3576): tensor names such as
`..._bf16_weight`, and byte size / element count (w4a16 weights: half a byte). Unknown codes show
as `code<N>`.
"""

from __future__ import annotations

import ast
import json
import mmap
import re
import struct
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from converter.common.errors import UserError

MAGIC = b"RKNN"
HEADER_BYTES = 64
FLATBUFFER_FORMAT = 6  # rknn-toolkit2 2.x writes format 6; earlier formats are not FlatBuffers
DTYPES = {1: "float32", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 10: "float16", 16: "bfloat16", 64: "int4"}
# Tensor kinds that hold constants (weights, biases, the compiler's own tables), by the same inference:
# 1 input, 2 output, 3 activation, 4 weight, 5 small constant, 8 constant the compiler made.
CONSTANT_KINDS = (4, 5, 8)


@dataclass(frozen=True)
class RknnFile:
    target: str
    toolkit_version: str
    compiler_version: str
    format_version: int
    source_format: str  # what the toolkit loaded: "ONNX", ...
    inputs: list[dict]  # name, shape (as the source model had it), dtype and layout at runtime
    outputs: list[dict]
    op_counts: dict[str, int]  # node type -> count, most first
    constant_bytes: dict[str, int]  # dtype -> bytes of constant tensors in the file
    file_bytes: int

    def to_json(self) -> dict:
        return asdict(self)


def read(path: Path) -> RknnFile:
    """The file's own account of itself; UserError naming the file when it is not an .rknn."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < HEADER_BYTES:
                raise _not_rknn(path, f"{size} bytes, shorter than the {HEADER_BYTES}-byte header")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _parse(path, mm, size)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def _not_rknn(path: Path, why: str) -> UserError:
    return UserError(f"{path}: not an .rknn file ({why})")


def _parse(path: Path, mm: mmap.mmap, size: int) -> RknnFile:
    if mm[:4] != MAGIC:
        raise _not_rknn(path, f"starts with {bytes(mm[:4])!r}, not {MAGIC!r}")
    version, length = struct.unpack_from("<QQ", mm, 8)
    if version != FLATBUFFER_FORMAT:
        raise _not_rknn(path, f"format version {version}; this reader knows {FLATBUFFER_FORMAT}, rknn-toolkit2 2.x")
    trailer_at = HEADER_BYTES + length
    if trailer_at + 8 > size:
        raise _not_rknn(path, f"truncated: the header promises {length:,} bytes of model, the file has {size:,}")
    (trailer_len,) = struct.unpack_from("<Q", mm, trailer_at)
    if trailer_at + 8 + trailer_len > size:
        raise _not_rknn(path, "truncated JSON trailer")
    try:
        trailer = json.loads(mm[trailer_at + 8:trailer_at + 8 + trailer_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _not_rknn(path, "its JSON trailer does not parse") from None
    view = memoryview(mm)[HEADER_BYTES:trailer_at]
    try:
        if bytes(view[4:8]) != MAGIC:
            raise _not_rknn(path, "its model is not an RKNN FlatBuffer")
        return _from_flatbuffer(view, trailer, version, size)
    finally:
        view.release()


def _from_flatbuffer(view: memoryview, trailer: dict, version: int, size: int) -> RknnFile:
    from rknncli.schema.rknn.Model import Model

    model = Model.GetRootAs(view, 0)
    shapes = _source_shapes(model.Generator())
    ops, constants = Counter(), Counter()
    for g in range(model.GraphsLength()):
        graph = model.Graphs(g)
        ops.update(graph.Nodes(i).Type().decode() for i in range(graph.NodesLength()))
        for i in range(graph.TensorsLength()):
            tensor = graph.Tensors(i)
            if tensor.Kind() in CONSTANT_KINDS:
                constants[DTYPES.get(tensor.DataType(), f"code{tensor.DataType()}")] += tensor.Size()
    return RknnFile(
        target=_text(model.Runtime()) or ",".join(trailer.get("target_platform", [])),
        toolkit_version=str(trailer.get("version", "")),
        compiler_version=_compiler_version(_text(model.Compiler())),
        format_version=version,
        source_format=_text(model.Source()),
        inputs=_io(model.InputJson(), shapes),
        outputs=_io(model.OutputJson(), shapes),
        op_counts=dict(ops.most_common()),
        constant_bytes=dict(constants.most_common()),
        file_bytes=size,
    )


def _compiler_version(compiler: str) -> str:
    """"2.5.0(compiler version: 2.5.0 (74ea630ce@2026-09-29T14:54:20))" -> "2.5.0"."""
    found = re.search(r"compiler version: ([\w.]+)", compiler)
    return found.group(1) if found else compiler.split("(")[0].strip()


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def _source_shapes(generator: bytes | None) -> dict[str, list[int]]:
    """The source model's tensor shapes from `Generator`, a Python-literal dict the toolkit writes."""
    try:
        attrs = ast.literal_eval(_text(generator)).get("attrs", {}) if generator else {}
    except (ValueError, SyntaxError, AttributeError):
        return {}
    return {name: list(a["shape"]) for name, a in attrs.items() if isinstance(a, dict) and "shape" in a}


def _io(raw: bytes | None, shapes: dict[str, list[int]]) -> list[dict]:
    tensors = json.loads(_text(raw) or "{}")
    return [{"name": name, "shape": shapes.get(name), "dtype": t.get("dtype"), "layout": t.get("layout")}
            for name, t in tensors.items()]
