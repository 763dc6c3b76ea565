"""An ONNX graph evaluated op by op in torch, so that autograd can differentiate it: the gradient of the
output with respect to every tensor of the graph in one backward pass (quantization sensitivity,
converter/mixed_precision/gradient.py). Covers the operators rkconvert's UNet graphs hold after the passes
(24 kinds on the demo and SD 1.5, and the Split of tiled attention); any other raises Unsupported naming
it. Checked against ONNX Runtime in tests/test_hybrid.py (SD 1.5 at 64 px: 5.6e-7 apart on outputs of
magnitude 1) and tests/test_tile_attention.py."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from converter.common import external_weights, onnx_files

class Unsupported(ValueError):
    """The graph holds an operator (or a form of one) this evaluation does not cover."""


# ONNX TensorProto element types -> torch dtypes (those the graphs cast between)
_DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64}


def _attrs(node: onnx.NodeProto) -> dict:
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _shape_list(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


def _reshape(x, shape, allowzero=0):
    dims = _shape_list(shape)
    return x.reshape([x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(dims)])


def _slice(x, starts, ends, axes=None, steps=None):
    starts, ends = _shape_list(starts), _shape_list(ends)
    axes = _shape_list(axes) if axes is not None else list(range(len(starts)))
    steps = _shape_list(steps) if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step != 1:
            raise Unsupported(f"Slice with step {step}")
        size = x.shape[axis]
        index[axis] = slice(max(-size, min(start, size)), max(-size, min(end, size)))
    return x[tuple(index)]


def _layer_norm(x, scale, bias=None, axis=-1, epsilon=1e-5, **_):
    axis = axis % x.dim()
    return F.layer_norm(x, x.shape[axis:], scale, bias, epsilon)


def _instance_norm(x, scale, bias, epsilon=1e-5):
    return F.instance_norm(x, weight=scale, bias=bias, eps=epsilon)


def _conv(x, w, b=None, dilations=None, group=1, pads=None, strides=None, **_):
    dims = x.dim() - 2
    pads = pads or [0] * (2 * dims)
    if pads[:dims] != pads[dims:]:
        raise Unsupported(f"Conv with uneven pads {pads}")
    return F.conv2d(x, w, b, strides or 1, pads[:dims], dilations or 1, group)


def _gemm(a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    out = alpha * (a.t() if transA else a) @ (b.t() if transB else b)
    return out if c is None else out + beta * c


def _resize(x, roi=None, scales=None, sizes=None, mode="nearest", **_):
    if mode != "nearest":
        raise Unsupported(f"Resize mode {mode!r}")
    if sizes is not None and sizes.numel():
        return F.interpolate(x, size=_shape_list(sizes)[2:], mode="nearest")
    factors = [float(v) for v in scales.reshape(-1).tolist()][2:]
    return F.interpolate(x, scale_factor=factors, mode="nearest")


def _gather(x, indices, axis=0):
    return torch.index_select(x, axis, indices.reshape(-1).long() % x.shape[axis]).reshape(
        x.shape[:axis] + indices.shape + x.shape[axis + 1:])


def _unsqueeze(x, axes):
    for axis in sorted(a % (x.dim() + len(_shape_list(axes))) for a in _shape_list(axes)):
        x = x.unsqueeze(axis)
    return x


def _split(x, split=None, axis=0, **_):
    if split is None:
        raise Unsupported("Split into equal parts")
    return tuple(torch.split(x, _shape_list(split), axis))


OPS: dict[str, Callable] = {
    "Identity": lambda x: x,
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div,
    "MatMul": torch.matmul, "Sqrt": torch.sqrt, "Erf": torch.erf, "Sigmoid": torch.sigmoid,
    "Softmax": lambda x, axis=-1: torch.softmax(x, axis),
    "Transpose": lambda x, perm=None: x.permute(*(perm or reversed(range(x.dim())))),
    "Reshape": _reshape, "Slice": _slice, "Unsqueeze": _unsqueeze, "Gather": _gather,
    "Concat": lambda *xs, axis: torch.cat(xs, axis), "Split": _split,
    "Shape": lambda x, start=0, end=None: torch.tensor(x.shape[start:end], dtype=torch.int64),
    "Cast": lambda x, to: x.to(_DTYPES[to]),
    "Conv": _conv, "Gemm": _gemm, "Resize": _resize,
    "LayerNormalization": _layer_norm, "InstanceNormalization": _instance_norm,
}


class TorchGraph:
    """`model` as a function of its inputs; `run` keeps the tensors asked for."""

    def __init__(self, model: onnx.ModelProto):
        """Takes `model` over: its initializers move into torch one at a time, external ones read from their
        file as they move (onnx_files.load_lazy), so the weights are held once (SD 1.5: 3.4 GB, not 6.8)."""
        unknown = sorted({n.op_type for n in model.graph.node} - set(OPS) - {"Constant"})
        if unknown:
            raise Unsupported(f"ONNX operator(s) {', '.join(unknown)}")
        self.model = model
        self.weights = {}
        while model.graph.initializer:
            tensor = model.graph.initializer.pop()
            self.weights[tensor.name] = torch.from_numpy(external_weights.values(tensor).copy())
        for node in model.graph.node:
            if node.op_type == "Constant":
                self.weights[node.output[0]] = torch.from_numpy(
                    numpy_helper.to_array(node.attribute[0].t).copy())
        self.outputs = [o.name for o in model.graph.output]

    @classmethod
    def load(cls, onnx_path: Path) -> TorchGraph:
        return cls(onnx_files.load_lazy(onnx_path))

    def run(self, inputs: dict[str, torch.Tensor],
            keep: set[str]) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """The graph's outputs for `inputs`, and the tensors named in `keep` (graph inputs included)."""
        values = {**self.weights, **inputs}
        kept = {name: t for name, t in inputs.items() if name in keep}
        for node in self.model.graph.node:
            for name, value in self._step(node, values):
                if name in keep:
                    kept[name] = value
        return [values[name] for name in self.outputs], kept

    def stream(self, inputs: dict[str, torch.Tensor], names: set[str],
               visit: Callable[[str, torch.Tensor], None]) -> list[torch.Tensor]:
        """The graph's outputs for `inputs`, without gradients, each tensor let go after its last reader:
        `visit(name, value)` sees each of `names` as it is made (graph inputs first). Holds the live tensors
        only, so a full resolution fits where `run` keeping them all would not."""
        last = {name: i for i, node in enumerate(self.model.graph.node) for name in node.input}
        values = {**self.weights, **inputs}
        for name in names & set(inputs):
            visit(name, inputs[name])
        with torch.no_grad():
            for i, node in enumerate(self.model.graph.node):
                for name, value in self._step(node, values):
                    if name in names:
                        visit(name, value)
                for name in node.input:
                    if last.get(name) == i and name not in self.weights and name not in self.outputs:
                        values.pop(name, None)
        return [values[name] for name in self.outputs]

    @staticmethod
    def _step(node: onnx.NodeProto, values: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """Evaluate `node` on `values`, into them; its outputs."""
        if node.op_type == "Constant":
            return []
        args = [values[name] if name else None for name in node.input]
        while args and args[-1] is None:
            args.pop()
        out = OPS[node.op_type](*args, **_attrs(node))
        made = list(zip(node.output, out if isinstance(out, tuple) else (out,)))
        values.update(made)
        return made
