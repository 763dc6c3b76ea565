"""Weight-only DequantizeLinear in ONNX: W8A16 weights as other tools write them, both directions.

`add`: each float32 weight initializer equal to a dequantized int8 weight (as laid out, or transposed
as torch.onnx lays out a Linear's MatMul weight) becomes int8 + scale + zero point (zeros) and a
DequantizeLinear along its output-channel axis. `fold`: the reverse, for building; anything but
symmetric weight-only int8 DequantizeLinear on constants is refused with the reason.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter.common.errors import UserError
from converter.common.external_weights import values
from converter.w8a16.int8_weights import dequantize

QUANTIZED_OPS = ("QuantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger",
                 "DynamicQuantizeLinear", "MatMulNBits")


def _key(array: np.ndarray) -> tuple:
    return array.shape, hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def add(model: onnx.ModelProto, int8: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[onnx.ModelProto, int]:
    """Replace matching float weights by int8 + DequantizeLinear; returns the model and the count."""
    index = {}
    for q, scale in int8.values():
        w = dequantize(q, scale)
        index[_key(w)] = (q, scale, 0)
        if w.ndim == 2:
            index[_key(w.T)] = (q.T, scale, 1)
    graph = model.graph
    kept, added, nodes = [], [], []
    for init in graph.initializer:
        match = index.get(_key(numpy_helper.to_array(init))) if init.data_type == onnx.TensorProto.FLOAT else None
        if match is None:
            kept.append(init)
            continue
        q, scale, axis = match
        names = (f"{init.name}_quantized", f"{init.name}_scale", f"{init.name}_zero_point")
        added += [numpy_helper.from_array(np.ascontiguousarray(q), names[0]), numpy_helper.from_array(scale, names[1]),
                  numpy_helper.from_array(np.zeros(scale.shape, np.int8), names[2])]
        nodes.append(helper.make_node("DequantizeLinear", list(names), [init.name], axis=axis,
                                      name=f"{init.name}/DequantizeLinear"))
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    return model, len(nodes)


def _refuse(path: Path, node: onnx.NodeProto, why: str) -> None:
    raise UserError(f"{path}: {node.op_type} {node.name or node.output[0]}: {why}; rkconvert reads float "
                    "models and symmetric per-channel int8 weight-only DequantizeLinear (W8A16)")


def fold(model: onnx.ModelProto, path: Path) -> tuple[onnx.ModelProto, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Float32 weights back in place of weight-only DequantizeLinear; returns the int8 weights by name.
    Weights left in their file (onnx_files.load_lazy) are read only where a DequantizeLinear takes them."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    int8, drop, folded, nodes = {}, set(), [], []
    for node in graph.node:
        if node.op_type in QUANTIZED_OPS:
            _refuse(path, node, "quantized activations or integer kernels")
        if node.op_type != "DequantizeLinear":
            nodes.append(node)
            continue
        x, scale, zero = (list(node.input) + [""] * 3)[:3]
        if x not in inits:
            _refuse(path, node, "dequantizes an activation, not a weight")
        q = values(inits[x])
        s = values(inits[scale]) if scale in inits else None
        if q.dtype != np.int8 or s is None or s.dtype != np.float32:
            _refuse(path, node, f"{q.dtype} weight with {'no constant' if s is None else s.dtype} scale")
        if zero and np.any(values(inits[zero])):
            _refuse(path, node, "non-zero zero point (asymmetric)")
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
        if s.ndim != 1 or s.shape[0] != q.shape[axis] or axis not in (0, 1):
            _refuse(path, node, f"scale of shape {list(s.shape)} is not one per output channel")
        moved = np.moveaxis(q, axis, 0)
        int8[node.output[0]] = (moved, s)
        folded.append(numpy_helper.from_array(np.moveaxis(dequantize(moved, s), 0, axis), node.output[0]))
        drop.update(i for i in node.input if i)
    kept = [t for t in graph.initializer if t.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(kept + folded)
    del graph.node[:]
    graph.node.extend(nodes)
    return model, int8
