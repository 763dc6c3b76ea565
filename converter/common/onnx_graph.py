"""What the per-layer report and the sensitivity measurement need of an ONNX graph: its structure, no weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx


@dataclass
class Graph:
    """What the matcher needs of the ONNX graph (structure only, no weights)."""

    model: onnx.ModelProto
    tensors: set[str]
    node_output: dict[str, str]
    producer: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]
    inputs: set[str]

    @classmethod
    def load(cls, path: Path) -> "Graph":
        model = onnx.load(str(path), load_external_data=False)
        nodes = model.graph.node
        producer = {o: n for n in nodes for o in n.output}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        inputs = {i.name for i in model.graph.input}
        return cls(model, set(producer) | inputs, {n.name: n.output[0] for n in nodes if n.output},
                   producer, consumers, inputs)

    def downstream(self, tensor: str, depth: int) -> list[str]:
        """`tensor` and the tensors up to `depth` nodes after it, nearest first."""
        found, frontier = [tensor], [tensor]
        for _ in range(depth):
            frontier = [o for t in frontier for n in self.consumers.get(t, []) for o in n.output if o not in found]
            found.extend(dict.fromkeys(frontier))
        return found
