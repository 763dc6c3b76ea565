"""MatMul and Gemm with a constant weight whose inner dimension is not a multiple of 32, padded with zeros
to the next one, so rk3562's w8a16 compiler does not die.

RKNN limitation: rknn-toolkit2 2.5.0 compiling w8a16 for rk3562 turns a MatMul by a constant weight
into a convolution (`convert_exmatmul_to_conv`) and then dies in `build()` (SIGSEGV, SIGABRT or SIGBUS,
at random between runs: heap corruption) for many inner widths K. Found by `rkconvert diagnose` on a
W8A16 UNet with 16-channel attention (reduced to one MatMul [1,64,16] x [16,16] in 39 builds). Measured
on one MatMul [1,64,K] x [K,32] built alone, runs that died / runs: K=8 2/3, 16 3/5, 40 4/4, 48 1/1;
K=4 1/4 and K=24 0/3 (the corruption does not always kill); every multiple of 32 built: K=32 0/8, 64 0/7,
96 0/2, 128 0/2, 320 0/1. The output width does not matter (K=32 with N=2, 4, 8, 16: all built). Gemm
[1,K] x [K,64] the same: K=16 3/3 died, 40 and 64 built.

Rewrite (exact): the activation gets zero columns up to the next multiple of 32 by a Concat with a zero
constant on its last axis, the weight matching zero rows; the product is unchanged. Runs for w8a16 on
rk3562 only (targets/rk3562.py).

Verified: ONNX Runtime outputs before vs after are equal, and a tiny UNet with 16-channel attention
builds as w8a16 on rk3562 (tests/test_pad_matmul_inner_dim.py).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .framework import GraphPass, static_shape

MULTIPLE = 32


def _inner(node: gs.Node) -> int | None:
    """The inner dimension of a MatMul or Gemm by a constant 2-D weight, else None."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if node.op not in ("MatMul", "Gemm") or not isinstance(weight, gs.Constant) or weight.values.ndim != 2:
        return None
    return weight.shape[1] if node.op == "Gemm" and node.attrs.get("transB", 0) else weight.shape[0]


class PadMatmulInnerDim(GraphPass):
    name = "pad_matmul_inner_dim"
    needs_shapes = True
    problem_kind = "crash"
    problem = (f"MatMul or Gemm by a constant weight whose inner dimension is not a multiple of {MULTIPLE}: "
               "rknn-toolkit2 2.5.0 dies compiling it as w8a16")

    def where(self, match):
        return match.name

    def find(self, graph):
        return [n for n in graph.nodes if (k := _inner(n)) is not None and k % MULTIPLE]

    def check(self, graph, match):
        if match.op == "Gemm" and match.attrs.get("transA", 0):
            return f"{match.name}: Gemm with transA (its activation's inner axis is not the last)"
        x = static_shape(match.inputs[0].shape)
        if x is None or x[-1] != _inner(match):
            return f"{match.name}: padding its activation needs its static shape"
        return None

    def rewrite(self, graph, match, host):
        weight, k = match.inputs[1].values, _inner(match)
        wide_k = -(-k // MULTIPLE) * MULTIPLE
        if match.op == "Gemm" and match.attrs.get("transB", 0):
            padded = np.zeros((weight.shape[0], wide_k), weight.dtype)
            padded[:, :k] = weight
        else:
            padded = np.zeros((wide_k, weight.shape[1]), weight.dtype)
            padded[:k] = weight
        match.inputs[1] = gs.Constant(f"{match.name}.padded_weight", padded)
        x = match.inputs[0]
        shape = static_shape(x.shape)
        zeros = gs.Constant(f"{match.name}.zero_columns", np.zeros((*shape[:-1], wide_k - k), x.dtype))
        wide = gs.Variable(f"{match.name}/padded_input", x.dtype, [*shape[:-1], wide_k])
        graph.nodes.append(gs.Node("Concat", f"{match.name}/pad_input", attrs={"axis": -1}, inputs=[x, zeros],
                                   outputs=[wide]))
        match.inputs[0] = wide
        return f"{match.name}: inner dimension {k} computed as {wide_k}"
