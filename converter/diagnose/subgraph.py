"""A graph's nodes, any subset of them, cut out as a model of their own that the toolkit can build.

The cut is what a reduction hands the toolkit, so it must be a graph the toolkit reads the way it read
those nodes in place:
- a tensor that comes from outside the kept nodes becomes an input, with the shape and dtype it has in
  place (from shape inference, else from its value);
- a tensor computed from constants alone (a Reshape's target shape, a `Shape` of a static tensor, a
  `Constant` node's output) becomes a constant of the cut, as the toolkit folds it in the whole graph:
  as an input it would turn a static Reshape into a dynamic one and fail another way;
- every tensor the kept nodes hand to nodes outside them, or that the graph outputs, is an output, so
  nothing kept is dead (the toolkit would drop it), unless it is computed from constants alone (the
  toolkit folds it and has no such output to give);
- an empty name is ONNX's way to leave an optional input out (`Resize`'s `roi`): never a tensor.
Nodes are named by their index in the graph's (topological) order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter.common import external_weights, onnx_files
from converter.diagnose.tensor_store import TensorStore
from graph_passes.framework import with_shapes

# Outputs fixed by a static-shape graph's shapes, whatever its inputs' values.
_SHAPE_OPS = {"Shape", "Size"}


class Cutter:
    def __init__(self, source: Path, store: TensorStore):
        self.source, self.store = source, store
        self.model = onnx_files.load_lazy(source)
        graph = self.model.graph
        self.nodes = list(graph.node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.graph_outputs = {o.name for o in graph.output}
        try:
            inferred = with_shapes(self.model).graph.value_info
        except Exception:  # noqa: BLE001 - without inferred shapes, values give them
            inferred = []
        self.types = {v.name: v for v in [*inferred, *graph.input, *graph.output]}
        self.consumers: dict[str, set[int]] = {}
        for i, node in enumerate(self.nodes):
            for name in node.input:
                self.consumers.setdefault(name, set()).add(i)
        self.varying = self._varying({i.name for i in graph.input if i.name not in self.initializers})

    def __len__(self) -> int:
        return len(self.nodes)

    def index(self, names: Iterable[str]) -> set[int]:
        """The indices of the nodes named `names`."""
        wanted = set(names)
        return {i for i, node in enumerate(self.nodes) if node.name in wanted}

    def _varying(self, inputs: set[str]) -> set[str]:
        """The tensors whose values depend on the graph's inputs."""
        varying = set(inputs)
        for node in self.nodes:
            if node.op_type not in _SHAPE_OPS and any(i in varying for i in node.input if i):
                varying.update(o for o in node.output if o)
        return varying

    def cut(self, keep: Iterable[int]) -> onnx.ModelProto | None:
        """The kept nodes as a model (weights read in unless past protobuf's limit), or None when they
        hand nothing on (no output)."""
        kept = sorted(set(keep))
        inside = set(kept)
        nodes = [self.nodes[i] for i in kept]
        produced = {o for n in nodes for o in n.output if o}
        consumed = list(dict.fromkeys(i for n in nodes for i in n.input if i))
        outside = [t for t in consumed if t not in produced and t not in self.initializers]
        inputs = [t for t in outside if t in self.varying]
        folded = [t for t in outside if t not in self.varying]
        outputs = [o for n in nodes for o in n.output if o in self.varying
                   and (o in self.graph_outputs or self.consumers.get(o, set()) - inside)]
        if not outputs:
            return None
        unknown = [t for t in inputs + outputs
                   if onnx_files.static_shape(self.types.get(t, onnx.ValueInfoProto())) is None]
        values = self.store.values(folded + unknown) if folded or unknown else {}
        graph = helper.make_graph(
            nodes, f"{self.model.graph.name or 'graph'}-cut", [self._typed(t, values) for t in inputs],
            [self._typed(t, values) for t in outputs],
            [self.initializers[t] for t in consumed if t in self.initializers]
            + [numpy_helper.from_array(np.asarray(values[t]), t) for t in folded])
        model = helper.make_model(graph, opset_imports=self.model.opset_import, ir_version=self.model.ir_version)
        model.functions.extend(self.model.functions)
        if onnx_files.weight_bytes(model) <= onnx_files.EXTERNAL_DATA_ABOVE:
            external_weights.materialize(model)
        return model

    def _typed(self, name: str, values: dict[str, np.ndarray]) -> onnx.ValueInfoProto:
        if name in values:
            value = np.asarray(values[name])
            return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
        return self.types[name]


def save(model: onnx.ModelProto, path: Path) -> Path:
    """A cut written to `path` (its weights beside it when past protobuf's limit)."""
    for stale in onnx_files.files_of(path):
        stale.unlink(missing_ok=True)
    onnx_files.save(model, path)
    return path
