"""How a graph pass is written and run.

A pass is three small functions over an onnx-graphsurgeon graph, after onnxscript's rewriter:
`find` yields candidate matches, `check` says why a match must be left alone (or None), `rewrite`
changes the graph and returns one line saying what it did. `GraphPass.run` applies every match that
passes its check, cleans the graph up once, and reports the rewrites and the skips.

A rewrite may move part of the graph to the host (the board's CPU, before calling the NPU). It then
hands the runner a `HostProgram`: a small ONNX model computing new graph inputs from old ones, so the
inputs a user feeds the exported UNet (`sample`, `timestep`, ...) can always be turned into what the
`.rknn` takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx.external_data_helper import uses_external_data
from onnx_graphsurgeon.ir.tensor import LazyValues

from converter.common import external_weights


@dataclass
class HostProgram:
    """ONNX model run on the host: `inputs` are graph inputs before the pass, `outputs` after."""

    name: str
    model: onnx.ModelProto

    @property
    def inputs(self) -> list[str]:
        return [i.name for i in self.model.graph.input]

    @property
    def outputs(self) -> list[str]:
        return [o.name for o in self.model.graph.output]


@dataclass
class PassReport:
    name: str
    rewrites: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"pass": self.name, "rewrites": self.rewrites, "skipped": self.skipped}


class GraphPass:
    """Base of every pass. The subclass docstring names the RKNN behaviour and how it was verified.

    Most passes give `find`, `check` and `rewrite`; one that wraps a whole-model tool overrides `run`.
    """

    name: str = ""
    needs_shapes: bool = False  # the pass reads tensor shapes: infer them first (with_shapes)
    # For `rkconvert lint`: what goes wrong on the target when the pattern stays ("crash",
    # "unfaithful", "cpu"), in one line; empty for passes that only tidy or speed up.
    problem_kind: str = ""
    problem: str = ""

    def where(self, match: Any) -> str:
        """The node a match is reported at."""
        raise NotImplementedError

    def run(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport, list[HostProgram]]:
        graph = import_graph(self.prepare(model))
        report = PassReport(self.name)
        host: list[HostProgram] = []
        for match in list(self.find(graph)):
            reason = self.check(graph, match)
            if reason is None:
                report.rewrites.append(self.rewrite(graph, match, host))
            else:
                report.skipped.append(reason)
        if not report.rewrites:
            return model, report, host
        graph.cleanup().toposort()
        out = gs.export_onnx(graph)
        out.ir_version = model.ir_version
        out.producer_name, out.producer_version = model.producer_name, model.producer_version
        return out, report, host

    def find(self, graph: gs.Graph) -> Iterable[Any]:
        raise NotImplementedError

    def prepare(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """The model as `find` should see it (with inferred shapes when the pass needs them)."""
        return with_shapes(model) if self.needs_shapes else model

    def check(self, graph: gs.Graph, match: Any) -> str | None:
        return None

    def rewrite(self, graph: gs.Graph, match: Any, host: list[HostProgram]) -> str:
        raise NotImplementedError


class _FileValues(LazyValues):
    """A weight left in its file (converter/common/external_weights.py), read when a pass asks for its values;
    exported as the same file reference while nobody did."""

    def load(self) -> np.ndarray:
        return external_weights.values(self.tensor)


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """onnx-graphsurgeon's graph of `model`; weights left in their file stay there until read."""
    graph = gs.import_onnx(model)
    for tensor in graph.tensors().values():
        # gs keeps an initializer's TensorProto in LazyValues (private `_values`) and exports it as is;
        # once read, it exports the values in the graph but would still mark them external.
        if isinstance(tensor, gs.Constant) and isinstance(tensor._values, LazyValues) \
                and uses_external_data(tensor._values.tensor):
            tensor._values = _FileValues(tensor._values.tensor)
            tensor.data_location = None
    return graph


def only_reader(tensor: gs.Tensor) -> gs.Node | None:
    """The one node reading `tensor`, or None when it has none or several (a rewrite would change them all)."""
    return tensor.outputs[0] if len(tensor.outputs) == 1 else None


def static_shape(shape) -> list[int] | None:
    """An inferred shape as ints, or None when any dimension is symbolic or the shape is unknown."""
    return [int(d) for d in shape] if shape is not None and all(isinstance(d, (int, np.integer)) for d in shape) \
        else None


SMALL_INITIALIZER = 1024  # elements; shape and axis constants stay, weights are replaced by typed inputs


def with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose value_info holds every shape ONNX shape inference finds.

    Inference runs on a skeleton whose large initializers are typed graph inputs instead, so a UNet
    past protobuf's 2 GB limit infers as well, and no weight is copied twice.
    """
    graph = model.graph
    skeleton = onnx.helper.make_graph(
        list(graph.node), graph.name,
        list(graph.input) + [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in graph.initializer if np.prod(t.dims) > SMALL_INITIALIZER],
        list(graph.output), [t for t in graph.initializer if np.prod(t.dims) <= SMALL_INITIALIZER])
    skeleton = onnx.helper.make_model(skeleton, opset_imports=model.opset_import, ir_version=model.ir_version)
    inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    out.graph.value_info.extend(inferred.graph.value_info)
    return out
