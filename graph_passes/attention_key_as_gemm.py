"""The key projection of a single-head, batch-1 attention written as Gemm on a 2-D view instead of MatMul.

RKNN limitation: rknn-toolkit2 2.5.0 raises `KeyError: '<matmul>_mm'` in build() when an attention whose
scores are rank 3 with batch 1 (one head, or diffusers' heads folded into the batch with one head) takes
its keys from a MatMul by a constant weight: its `fuse_exmatmul_add_mul_exsoftmax13_exmatmul_to_sdpa`
looks up the projection's converted MatMul after `bypass_two_transpose` has removed it. Whatever the scale
(on the scores, on q, on q and k, none) and with the heads' Reshape/Transpose/Reshape between; the keys
fed as an input build. Found by `rkconvert fuzz` (catalogue entry attention-key-projection-keyerror). A
multi-head attention (rank-4 scores, or folded heads with more than one) builds and is left alone.

Rewrite (exact: the same products summed in the same order): `MatMul(x[1, S, C], W)` becomes
`Reshape(x, [S, C])`, `Gemm(., W)`, `Reshape(., [1, S, D])`.

Verified: ONNX Runtime outputs before vs after are equal, and the fuzzer's repro builds and matches ONNX
Runtime (tests/test_fuzz_found_passes.py).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .framework import GraphPass, only_reader, static_shape

_SCALE = ("Mul", "Div", "Add")  # scale and bias between the scores and their Softmax
_LAYOUT = ("Reshape", "Transpose")  # head split and the keys' transpose


def _reaches_softmax(tensor: gs.Tensor) -> bool:
    node = only_reader(tensor)
    while node is not None and node.op in _SCALE:
        node = only_reader(node.outputs[0])
    return node is not None and node.op == "Softmax"


def _key_projection(scores: gs.Node) -> gs.Node | None:
    """The MatMul by a constant 2-D weight the scores' keys come from, through Reshape/Transpose only."""
    tensor = scores.inputs[1]
    while tensor.inputs and tensor.inputs[0].op in _LAYOUT:
        tensor = tensor.inputs[0].inputs[0]
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is not None and producer.op == "MatMul" and isinstance(producer.inputs[1], gs.Constant) \
            and producer.inputs[1].values.ndim == 2:
        return producer
    return None


class AttentionKeyAsGemm(GraphPass):
    name = "attention_key_as_gemm"
    needs_shapes = True
    problem_kind = "crash"
    problem = ("single-head batch-1 attention whose keys come from a MatMul by a constant weight: rknn-toolkit2 "
               "2.5.0 raises KeyError in build() (fuse_exmatmul_add_mul_exsoftmax13_exmatmul_to_sdpa)")

    def where(self, match):
        return match.name

    def find(self, graph):
        found = {}
        for scores in graph.nodes:
            shape = static_shape(scores.outputs[0].shape) if scores.op == "MatMul" else None
            if shape and len(shape) == 3 and shape[0] == 1 and _reaches_softmax(scores.outputs[0]):
                projection = _key_projection(scores)
                if projection is not None:
                    found.setdefault(projection.name, projection)
        return list(found.values())

    def check(self, graph, match):
        shape = static_shape(match.inputs[0].shape)
        if shape is None or len(shape) != 3 or shape[0] != 1:
            return f"{match.name}: its input is not a static [1, S, C] tensor"
        return None

    def rewrite(self, graph, match, host):
        x, weight, y = match.inputs[0], match.inputs[1], match.outputs[0]
        _, rows, width = static_shape(x.shape)
        out = weight.values.shape[1]
        flat = gs.Variable(f"{match.name}/rows", x.dtype, [rows, width])
        product = gs.Variable(f"{match.name}/gemm", y.dtype, [rows, out])
        graph.nodes.extend([
            gs.Node("Reshape", f"{match.name}/to_rows", inputs=[x, gs.Constant(f"{match.name}.rows",
                                                                                  np.array([rows, width], np.int64))],
                    outputs=[flat]),
            gs.Node("Gemm", f"{match.name}/as_gemm", inputs=[flat, weight], outputs=[product]),
            gs.Node("Reshape", f"{match.name}/to_tokens", inputs=[product, gs.Constant(
                f"{match.name}.tokens", np.array([1, rows, out], np.int64))], outputs=[y]),
        ])
        match.outputs.clear()
        return f"{match.name}: keys [1, {rows}, {width}] x [{width}, {out}] as Gemm"
