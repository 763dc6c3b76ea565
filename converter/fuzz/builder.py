"""A small ONNX graph written node by node, each tensor with the static shape the toolkit needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # what the project's exports write (torch.onnx, opset 17)


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)


class Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[Tensor] = []
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def input(self, stem: str, shape: tuple[int, ...]) -> Tensor:
        self.inputs.append(Tensor(self._name(stem), tuple(shape)))
        return self.inputs[-1]

    def const(self, value, stem: str = "c") -> str:
        array = np.asarray(value)
        name = self._name(stem)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values, stem: str = "i") -> str:
        return self.const(np.asarray(values, np.int64), stem)

    def weight(self, *shape: int, fan_in: int | None = None) -> str:
        """Normal weights scaled by 1/sqrt(fan in), so activations stay near unit size through a chain."""
        fan = fan_in or int(np.prod(shape[1:])) or 1
        return self.const((self.rng.standard_normal(shape) / np.sqrt(fan)).astype(np.float32), "w")

    def op(self, op_type: str, inputs: list[str], shape: tuple[int, ...], **attrs) -> Tensor:
        return self.ops(op_type, inputs, [shape], **attrs)[0]

    def ops(self, op_type: str, inputs: list[str], shapes: list[tuple[int, ...]], **attrs) -> list[Tensor]:
        outputs = [Tensor(self._name(op_type.lower()), tuple(s)) for s in shapes]
        self.nodes.append(helper.make_node(op_type, inputs, [o.name for o in outputs], name=self._name(op_type),
                                           **attrs))
        return outputs

    def model(self, outputs: list[Tensor], name: str) -> onnx.ModelProto:
        value = lambda t: helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape))  # noqa: E731
        graph = helper.make_graph(self.nodes, name, [value(t) for t in self.inputs], [value(t) for t in outputs],
                                  self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        onnx.checker.check_model(inferred, full_check=True)
        return model
