"""Weights left in their file: a graph rewritten without reading the weights it does not touch.

A full-size UNet's ONNX keeps 3.4 GB of weights in an external-data file. Loaded whole, every
onnx-graphsurgeon round trip of a pass copies them (the passes stage peaked at 13.5 GB for SD 1.5).
Loaded lazily (converter/common/onnx_files.load_lazy), each external tensor keeps only its place in
the file (location made absolute, offset, length); a pass reads the few it needs (`values`), a host
program or a whole-model tool takes its weights in (`materialize`), and saving streams the rest from
file to file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx.external_data_helper import uses_external_data


def tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor the model holds: the graph's initializers first, then node attributes and subgraphs'."""
    def in_graph(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from in_graph(attr.g)
                for g in attr.graphs:
                    yield from in_graph(g)
    yield from in_graph(model.graph)


def place(tensor: onnx.TensorProto) -> tuple[Path, int, int | None]:
    """(file, offset, length or None for the rest of the file) of an external tensor."""
    info = {e.key: e.value for e in tensor.external_data}
    path = Path(info["location"])
    if not path.is_absolute():
        raise ValueError(f"{tensor.name}: weight at {path}, relative to a folder it does not know "
                         "(load the model with converter.common.onnx_files.load_lazy)")
    return path, int(info.get("offset", 0)), int(info["length"]) if "length" in info else None


def anchor(model: onnx.ModelProto, base_dir: Path) -> None:
    """Make every external tensor's location absolute, so the model can be read from anywhere."""
    for tensor in tensors(model):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = str((base_dir / entry.value).resolve())


def chunks(tensor: onnx.TensorProto, size: int = 64 * 2**20) -> Iterator[bytes]:
    """An external tensor's bytes from its file, at most `size` at a time (OSError if the file is short)."""
    path, offset, length = place(tensor)
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left is None or left:
            chunk = f.read(size if left is None else min(left, size))
            if not chunk:
                if left:
                    raise OSError(f"{path}: {tensor.name} needs bytes {offset}..{offset + length}, the file "
                                  "is shorter")
                return
            yield chunk
            if left is not None:
                left -= len(chunk)


def read_bytes(tensor: onnx.TensorProto) -> bytes:
    return b"".join(chunks(tensor))


def _inline(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """A copy of an external tensor holding its bytes (the original is left as it is)."""
    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    take_in(copy)
    return copy


def take_in(tensor: onnx.TensorProto) -> None:
    """Read an external tensor's bytes into it."""
    tensor.raw_data = read_bytes(tensor)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT


def values(tensor: onnx.TensorProto) -> np.ndarray:
    """A tensor's values, read from its file when it is external."""
    return onnx.numpy_helper.to_array(_inline(tensor) if uses_external_data(tensor) else tensor)


def materialize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every weight read into the model, in place (for ONNX Runtime on a proto, onnxsim, a host program)."""
    for tensor in tensors(model):
        if uses_external_data(tensor):
            take_in(tensor)
    return model
