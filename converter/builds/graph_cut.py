"""A graph cut into consecutive parts of about equal weight: one toolkit build per part.

rknn-toolkit2's build() holds several copies of a model's weights at once. On SD 1.5 at 512² (3.4 GB of
float32 weights; RSS sampled every second, this machine, 2.5.0) its process held 3.7 GB through its
Python-side fusion, 7.2 GB once its compiler had the graph and 14.2 GB while the compiler serialised the
model (RKNNModelExportPass). A part with half the weights needs about half of that, and the parts are
built one after another.

A part is an ordinary ONNX model: its nodes a consecutive run of the graph's (ONNX keeps nodes in
topological order), its inputs the graph inputs it reads and the tensors earlier parts hand it, its
outputs what later parts read and the graph outputs it makes. Nodes computed from weights alone
(Constant, and the Identity of a shared weight torch's exporter writes) are copied into each part that
reads them: a constant must not become a model input. Every other node is moved to just before its first
reader: the exporter writes some early (the cross-attention keys and values of the text embedding, each
resnet's time-embedding projection), and each would cross every cut after it. A cut goes where the weight before it is
within WINDOW of its share and no part holds over LARGEST times its share, at the point there that the
fewest activation bytes cross (a UNet's skip connections make that a real choice), and only where every
crossing tensor is a float tensor of known shape: the toolkit gets each as a model input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

WINDOW = 0.1  # a cut may miss its share of the weights by this fraction of the total
# ... and no part may hold more than this times its share: the toolkit's peak follows the largest part (SD 1.5
# as w8a8 in 3 parts, cut within the window alone: 0.82, 1.58 and 0.80 GiB, the middle one at 1.48x).
LARGEST = 1.2
# --parts auto: at most this much float32 weight per part (SD 1.5, 3.4 GB: 2 parts, the toolkit at 8 GB)
AUTO_PART_BYTES = 2 * 2**30
# A quantized build runs the toolkit's hybrid_quantization_step1 and step2 (so that the hybrid search's
# tries start from its step1), which peak at ~6.3x the part's float32 weights against ~4x for a float16
# build (SD 1.5 w8a8 at 512 px in 2 parts: 12.4 GB for the part holding 58 % of 3.44 GB, 9.2 GB for the
# other): smaller parts (SD 1.5: 3).
AUTO_QUANTIZED_PART_BYTES = 5 * 2**28
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}


@dataclass(frozen=True)
class Part:
    model: onnx.ModelProto
    inputs: list[str]
    outputs: list[str]


def _nbytes(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Every tensor's type and shape as ONNX shape inference finds them (the weights are not read)."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    for tensor in bare.graph.initializer:  # a weight's dims are enough; the small ones inline (shapes) are read
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
    inferred = onnx.shape_inference.infer_shapes(bare, data_prop=True).graph
    return {v.name: v for v in (*inferred.input, *inferred.value_info, *inferred.output)}


def _crossing_bytes(info: onnx.ValueInfoProto | None) -> int | None:
    """Bytes of a tensor handed from part to part; None when it cannot be a toolkit input."""
    if info is None or info.type.tensor_type.elem_type not in FLOAT_TYPES:
        return None
    dims = info.type.tensor_type.shape.dim
    if not dims or not all(d.HasField("dim_value") for d in dims):
        return None
    return int(np.prod([d.dim_value for d in dims])) * 4


def part_bytes(quantized: bool) -> int:
    """--parts auto's most float32 weight per part."""
    return AUTO_QUANTIZED_PART_BYTES if quantized else AUTO_PART_BYTES


def auto_count(weight_bytes: int, quantized: bool) -> int:
    """How many parts --parts auto cuts a graph with this much float32 weight into."""
    return max(1, -(-weight_bytes // part_bytes(quantized)))


def _schedule(graph: onnx.GraphProto) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """The nodes to cut, each as late as it can run, and the constant nodes apart (see the module's
    docstring)."""
    nodes = list(graph.node)
    if any(a.HasField("g") or a.graphs for n in nodes for a in n.attribute):
        raise ValueError("the graph has control flow (If/Loop): it cannot be cut into parts")
    constant = {t.name for t in graph.initializer}
    is_constant = []
    for n in nodes:
        is_constant.append(all(r in constant for r in n.input if r))
        if is_constant[-1]:
            constant.update(n.output)
    readers: dict[str, list[int]] = {}
    for k, n in enumerate(nodes):
        for name in n.input:
            readers.setdefault(name, []).append(k)
    # as late as possible: each node just before its first reader (ties keep graph order, so the order stays
    # topological: a node's key is below each of its readers')
    key = [float(k) for k in range(len(nodes))]
    for k in reversed(range(len(nodes))):
        later = [key[r] for o in nodes[k].output for r in readers.get(o, [])]
        key[k] = min(later, default=key[k] + 1e-6) - 1e-6
    order = sorted((k for k in range(len(nodes)) if not is_constant[k]), key=lambda k: (key[k], k))
    return [nodes[k] for k in order], [n for n, c in zip(nodes, is_constant) if c]


def _cuts(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], types: dict[str, onnx.ValueInfoProto],
          count: int) -> list[int]:
    weights = {t.name: _nbytes(t) for t in graph.initializer}
    produced_at = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    last_read = {o.name: len(nodes) for o in graph.output}
    first_read: dict[str, int] = {}
    for k, n in enumerate(nodes):
        for name in filter(None, n.input):
            last_read[name] = max(last_read.get(name, k), k)
            first_read.setdefault(name, k)
    crossing = np.zeros(len(nodes) + 1)
    unusable = np.zeros(len(nodes) + 1, dtype=np.int64)
    for name, k in produced_at.items():
        end = last_read.get(name, k)
        if end <= k:
            continue
        # a cut at c (parts nodes[:c] and nodes[c:]) is crossed for c in k+1 .. end
        size = _crossing_bytes(types.get(name))
        counter, amount = (unusable, 1) if size is None else (crossing, size)
        counter[k + 1] += amount
        counter[min(end, len(nodes) - 1) + 1] -= amount
    crossing, unusable = np.cumsum(crossing), np.cumsum(unusable)
    weight_before = np.zeros(len(nodes) + 1)
    for name, size in weights.items():
        if name in first_read:
            weight_before[first_read[name] + 1] += size
    weight_before = np.cumsum(weight_before)
    total = weight_before[-1]
    most = LARGEST * total / count
    found: list[int] = []
    for j in range(1, count):
        share = total * j / count
        start = found[-1] + 1 if found else 1
        # this part at most `most`, and what is left fits the parts after it at most `most` each
        candidates = [c for c in range(start, len(nodes)) if abs(weight_before[c] - share) <= WINDOW * total
                      and weight_before[c] - weight_before[start - 1] <= most
                      and total - weight_before[c] <= (count - j) * most and unusable[c] == 0]
        if not candidates:
            raise ValueError(f"no place to cut part {j + 1} of {count}: no point within {WINDOW:.0%} of its share "
                             f"of the weights, no part over {LARGEST:g}x its share, where only float tensors of "
                             "known shape cross")
        found.append(min(candidates, key=lambda c: (crossing[c], abs(weight_before[c] - share))))
    return found


def parts(model: onnx.ModelProto, count: int) -> list[Part]:
    """`model` as `count` parts run one after another (feed each the original inputs and every earlier
    part's outputs, by name); ValueError when it cannot be cut so. Initializers are shared with `model` by
    copy of their proto: weights left in their file stay there."""
    graph = model.graph
    nodes, constants = _schedule(graph)
    types = _types(model)
    bounds = [0, *_cuts(graph, nodes, types, count), len(nodes)]
    weights = {t.name: t for t in graph.initializer}
    constant_of = {o for n in constants for o in n.output}
    graph_outputs = {o.name for o in graph.output}
    result = []
    for i in range(len(bounds) - 1):
        own = nodes[bounds[i]:bounds[i + 1]]
        reads = list(dict.fromkeys(name for n in own for name in n.input if name))
        copied = _constants_read(reads, constants)
        made = {o for n in own for o in n.output}
        later = {name for n in nodes[bounds[i + 1]:] for name in n.input}
        inputs = [r for r in reads if r not in made and r not in weights and r not in constant_of]
        outputs = [o for n in own for o in n.output if o and (o in later or o in graph_outputs)]
        every_read = list(dict.fromkeys(name for n in copied + own for name in n.input if name))
        part = helper.make_graph(
            copied + own, f"{graph.name}_part{i + 1}",
            [types[name] for name in inputs], [types[name] for name in outputs],
            [weights[r] for r in every_read if r in weights],
            value_info=[types[o] for n in own for o in n.output if o in types and o not in outputs])
        part_model = helper.make_model(part, opset_imports=model.opset_import, ir_version=model.ir_version,
                                       producer_name=model.producer_name)
        result.append(Part(part_model, inputs, outputs))
    return result


def _constants_read(reads: list[str], constants: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """The constant nodes `reads` needs, with the constant nodes they read, in graph order."""
    producer = {o: k for k, n in enumerate(constants) for o in n.output}
    needed: set[int] = set()
    stack = [producer[r] for r in reads if r in producer]
    while stack:
        k = stack.pop()
        if k not in needed:
            needed.add(k)
            stack.extend(producer[r] for r in constants[k].input if r in producer)
    return [constants[k] for k in sorted(needed)]
