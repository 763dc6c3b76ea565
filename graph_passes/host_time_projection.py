"""Move the sinusoidal timestep projection (`time_proj`) to the host; feed its output as input `t_emb`.

RKNN limitation: rknn-toolkit2 2.5.0 dies with SIGSEGV (no Python error) inside `build()` (`fuse_ops`)
on every diffusers `UNet2DConditionModel` export. Bisection over topological prefixes of the graph
found the `flip_sin_to_cos` swap, `Slice + Slice + Concat` on the rank-2 `[1, C]` embedding. A 3-node
model holding only that pattern crashes the same way when its Slices carry the explicit `steps` input
torch.onnx writes (without `steps`, or on rank 4, it builds); the last rule the verbose log names
is `fuse_slice_slice_concat_to_conv` (tests/test_toolkit_crash.py). The rest
of the projection (Sin / Cos / Cast) is on Rockchip's CPU-only list anyway.

Rewrite: the region from a graph input to the first weight layer (Gemm / MatMul / Conv) that contains
a Sin or Cos becomes a host program (ONNX, a few hundred FLOPs); the UNet takes its output instead,
and `time_embedding.linear_1` onward stays on the NPU. Folding the flip into `linear_1`'s weights
would also remove the crash but keep the CPU-only Sin/Cos in the graph and the timestep on the NPU.

The region also ends where another graph input joins: an LCM UNet's `timestep_cond` projection is added
to the sinusoid before `linear_1`, and that Add stays on the NPU. An SDXL UNet has a second sinusoid, of its
size ids (`time_ids`, flipped the same way): it becomes a second host program, its output `time_ids_emb`,
and the Concat with the pooled text stays on the NPU.

Verified: ONNX Runtime outputs before vs after (host program feeding `t_emb`) agree to <= 1e-5 on
tiny SD 1.5 / SD 2.1 / BK-SDM UNets, and the RKNN build that crashed completes with >= 60 dB PSNR
(tests/test_host_time_projection.py); an LCM UNet (time_cond_proj_dim) builds (tests/test_lcm.py); a tiny
SDXL UNet builds at 67 dB, ONNX Runtime on both host programs within 1e-6 of diffusers (tests/test_sdxl.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from converter.common.external_weights import materialize
from .framework import GraphPass, HostProgram

HOST_INPUT_NAME = "t_emb"
WEIGHT_LAYERS = {"Gemm", "MatMul", "Conv"}
TRIG = {"Sin", "Cos"}


@dataclass
class TimeProjection:
    source: gs.Variable  # graph input, e.g. `timestep`
    boundary: gs.Variable  # what the first weight layer reads, e.g. the embedding after the flip


def _region(source: gs.Variable) -> tuple[list[gs.Node], set[str]]:
    """Nodes reachable from `source` without entering a weight layer or a node that also reads another graph
    input (an LCM UNet adds its guidance embedding's projection to the timestep's), and the tensors such
    nodes read."""
    nodes, seen, boundary = [], set(), set()
    frontier = [source]
    while frontier:
        tensor = frontier.pop()
        for node in tensor.outputs:
            if node.op in WEIGHT_LAYERS or any(_ancestors_inputs(t) - {source.name} for t in node.inputs):
                boundary.add(tensor.name)
            elif id(node) not in seen:
                seen.add(id(node))
                nodes.append(node)
                frontier.extend(node.outputs)
    return nodes, boundary


def _ancestors_inputs(tensor: gs.Tensor) -> set[str]:
    """Names of the non-constant tensors without producers that `tensor` depends on."""
    found, stack, seen = set(), [tensor], set()
    while stack:
        t = stack.pop()
        if t.name in seen or isinstance(t, gs.Constant):
            continue
        seen.add(t.name)
        if not t.inputs:
            found.add(t.name)
        for node in t.inputs:
            stack.extend(node.inputs)
    return found


def host_input_name(source: str) -> str:
    """`t_emb` for the timestep's projection; another input's (SDXL's time_ids) is named after it."""
    return HOST_INPUT_NAME if source == "timestep" else f"{source}_emb"


def _host_model(graph: gs.Graph, match: TimeProjection) -> onnx.ModelProto:
    """The region as its own model: source input -> `t_emb`, with the output's type found by running it."""
    host = graph.copy()
    tensors = host.tensors()
    host.inputs = [tensors[match.source.name]]
    host.outputs = [tensors[match.boundary.name]]
    host.cleanup(remove_unused_graph_inputs=True).toposort()
    name = host.outputs[0].name = host_input_name(match.source.name)
    model = materialize(gs.export_onnx(host, do_type_check=False))  # a program of its own: weights inside
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    source = match.source
    feed = np.zeros([d if isinstance(d, int) else 1 for d in (source.shape or [])], dtype=source.dtype)
    out = session.run(None, {source.name: feed})[0]
    model.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info(
        name, onnx.helper.np_dtype_to_tensor_dtype(out.dtype), out.shape))
    return model


class HostTimeProjection(GraphPass):
    name = "host_time_projection"
    problem_kind = "crash"
    problem = ("sinusoidal timestep projection: its flip_sin_to_cos Slice+Slice+Concat kills rknn-toolkit2 "
               "2.5.0 (SIGSEGV in fuse_slice_slice_concat_to_conv); its Sin/Cos are CPU-only")

    def where(self, match):
        """The flip's Concat (the node the crash pattern ends in), looking through trailing Casts."""
        node = match.boundary.inputs[0] if match.boundary.inputs else None
        while node is not None and node.op in ("Cast", "Identity") and node.inputs[0].inputs:
            node = node.inputs[0].inputs[0]
        return node.name if node is not None else match.boundary.name

    def find(self, graph):
        for source in graph.inputs:
            nodes, boundary = _region(source)
            if any(n.op in TRIG for n in nodes) and len(boundary) == 1:
                yield TimeProjection(source, graph.tensors()[boundary.pop()])

    def check(self, graph, match):
        if _ancestors_inputs(match.boundary) != {match.source.name}:
            return f"{match.boundary.name}: depends on more graph inputs than {match.source.name}"
        if (name := host_input_name(match.source.name)) in graph.tensors():
            return f"the graph already has a tensor named {name}"
        return None

    def rewrite(self, graph, match, host):
        model = _host_model(graph, match)
        out_type = model.graph.output[0].type.tensor_type
        shape = [d.dim_value for d in out_type.shape.dim]
        name = model.graph.output[0].name
        t_emb = gs.Variable(name, dtype=onnx.helper.tensor_dtype_to_np_dtype(out_type.elem_type), shape=shape)
        readers = list(match.boundary.outputs)
        for node in readers:
            node.inputs = [t_emb if t is match.boundary else t for t in node.inputs]
        graph.inputs.insert(graph.inputs.index(match.source), t_emb)
        graph.cleanup()
        if not match.source.outputs:
            graph.inputs.remove(match.source)
        host.append(HostProgram(self.name if name == HOST_INPUT_NAME else f"{self.name}_{match.source.name}", model))
        moved = len(model.graph.node)
        return (f"{match.source.name} -> {name}{list(shape)} on the host ({moved} nodes moved); "
                f"{', '.join(n.name for n in readers)} now read {name}")
