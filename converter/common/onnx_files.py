"""Reading and writing ONNX files, with weights in one external-data file once past protobuf's 2 GB.

`load_lazy` leaves external weights in their file (converter/common/external_weights.py): a stage that
rewrites the graph around them loads and saves a full-size UNet in seconds and a few hundred MB;
`save` streams them from the file they came from into the new one.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import onnx
from onnx.external_data_helper import uses_external_data

from converter.common.errors import UserError
from converter.common import external_weights

PROTOBUF_LIMIT = 2**31 - 1
# Leave room for the graph itself next to the weights.
EXTERNAL_DATA_ABOVE = PROTOBUF_LIMIT - 64 * 2**20
EXTERNAL_MIN_BYTES = 1024  # smaller tensors (shapes, scalars) stay in the graph, where passes read them


def weight_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            total += int({e.key: e.value for e in t.external_data}.get("length", 0))
        else:
            total += len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes
    return total


def save(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Write `model` to `path` (and `path`.data when large or when its weights were left in a file);
    return the files written. Weights written to `path`.data leave `model` (as onnx.save_model does)."""
    lazy = any(uses_external_data(t) for t in external_weights.tensors(model))
    if not lazy and weight_bytes(model) <= EXTERNAL_DATA_ABOVE:
        onnx.save_model(model, str(path))
        return [path]
    data = path.with_name(path.name + ".data")
    if lazy and any(external_weights.place(t)[0] == data.resolve() for t in external_weights.tensors(model)
                    if uses_external_data(t)):
        raise ValueError(f"{data}: the model's weights are read from this file; save elsewhere")
    # Only initializers go to the data file (as onnx.save_model does): a node attribute's weight goes back
    # into the graph (tensors() yields the initializers first).
    for tensor in itertools.islice(external_weights.tensors(model), len(model.graph.initializer), None):
        if uses_external_data(tensor):
            external_weights.take_in(tensor)
    with open(data, "wb") as out:
        for tensor in model.graph.initializer:
            offset = out.tell()
            if uses_external_data(tensor):
                for chunk in external_weights.chunks(tensor):  # file to file, never the whole weight
                    out.write(chunk)
            elif tensor.HasField("raw_data") and len(tensor.raw_data) >= EXTERNAL_MIN_BYTES:
                out.write(tensor.raw_data)
                tensor.ClearField("raw_data")
            else:
                continue
            _point_to(tensor, data.name, offset, out.tell() - offset)
    onnx.save_model(model, str(path))
    return [path, data]


def _point_to(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


def load(path: Path, with_weights: bool = True) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=with_weights)
    except Exception as e:  # onnx raises DecodeError, ValueError, OSError... for a damaged file
        raise UserError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def load_lazy(path: Path) -> onnx.ModelProto:
    """The model with its external weights left in their file, to be read when needed."""
    model = load(path, with_weights=False)
    external_weights.anchor(model, path.parent)
    sizes: dict[Path, int | None] = {}
    for tensor in external_weights.tensors(model):
        if uses_external_data(tensor):
            source, offset, length = external_weights.place(tensor)
            if source not in sizes:
                sizes[source] = source.stat().st_size if source.is_file() else None
            size = sizes[source]
            if size is None or offset + (length or 0) > size:
                raise UserError(f"{path}: weight {tensor.name} is in {source}, which is "
                                f"{'missing' if size is None else f'only {size} bytes long'}")
    return model


def files_of(path: Path) -> list[Path]:
    """The model file and its external-data file, if any."""
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]


def static_shape(value_info: onnx.ValueInfoProto) -> list[int] | None:
    dims = value_info.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return None if None in shape else shape
