"""Reading and writing ONNX files, with weights in one external-data file once past protobuf's 2 GB."""

from __future__ import annotations

from pathlib import Path

import onnx

from converter.common.errors import UserError

PROTOBUF_LIMIT = 2**31 - 1
# Leave room for the graph itself next to the weights.
EXTERNAL_DATA_ABOVE = PROTOBUF_LIMIT - 64 * 2**20


def weight_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            total += int({e.key: e.value for e in t.external_data}.get("length", 0))
        else:
            total += len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes
    return total


def save(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Write `model` to `path` (and `path`.data when large); return the files written."""
    if weight_bytes(model) <= EXTERNAL_DATA_ABOVE:
        onnx.save_model(model, str(path))
        return [path]
    data = path.with_name(path.name + ".data")
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    return [path, data]


def load(path: Path, with_weights: bool = True) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=with_weights)
    except Exception as e:  # onnx raises DecodeError, ValueError, OSError... for a damaged file
        raise UserError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def files_of(path: Path) -> list[Path]:
    """The model file and its external-data file, if any."""
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]


def static_shape(value_info: onnx.ValueInfoProto) -> list[int] | None:
    dims = value_info.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return None if None in shape else shape
