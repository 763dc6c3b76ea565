"""Einsum written as the MatMul (and Transpose) it is, for the batched products attention uses.

RKNN limitation: Einsum is not in Rockchip's RK3588 operator list. rknn-toolkit2 2.5.0 converts some
itself, but an attention written with Einsum (`bhid,bhjd->bhij`, Softmax, `bhij,bhjd->bhid`, as some
exporters and hand-written attention do) raises `IndexError: list index out of range` in build()
(after `fuse_two_transpose`). Found by `rkconvert fuzz` (catalogue entry einsum-attention-indexerror):
the same graphs with MatMul build and match ONNX Runtime.

Rewrite: an equation over two operands of one rank whose leading (batch) letters are the same, in order,
on both inputs and the output, and which contracts one letter: `...ij,...jk->...ik` is MatMul; `...ik,...jk
->...ij` (the scores, keys not transposed) is MatMul of the first by the second with its last two axes
swapped. Any other equation is left alone.

Verified: ONNX Runtime outputs before vs after agree within float rounding (the products are the same,
ONNX Runtime's Einsum and MatMul kernels sum them in another order: 1.5e-6 at most on the fuzzer's
graphs), and the fuzzer's Einsum attentions build and match ONNX Runtime (tests/test_fuzz_found_passes.py).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from .framework import GraphPass


def _plan(equation: str) -> bool | None:
    """For a batched product: True when the second operand must be transposed first, False when not;
    None for any other equation."""
    inputs, _, out = equation.replace(" ", "").partition("->")
    a, _, b = inputs.partition(",")
    if not out or "." in equation or not (len(a) == len(b) == len(out) >= 2):
        return None
    batch = a[:-2]
    if b[:-2] != batch or out[:-2] != batch or len(set(a + b)) != len(batch) + 3:
        return None
    i, j = a[-2:]
    if b[-2:] == j + b[-1] and out[-2:] == i + b[-1] and b[-1] not in (i, j):
        return False  # ...ij,...jk->...ik
    if b[-1] == j and out[-2:] == i + b[-2] and b[-2] not in (i, j):
        return True  # ...ik,...jk->...ij
    return None


def _equation(node: gs.Node) -> str:
    equation = node.attrs.get("equation", "")
    return equation.decode() if isinstance(equation, bytes) else equation


class EinsumAsMatmul(GraphPass):
    name = "einsum_as_matmul"
    problem_kind = "crash"
    problem = ("Einsum (not in the RK3588 operator list): rknn-toolkit2 2.5.0 raises IndexError in build() on an "
               "attention written with it")

    def where(self, match):
        return match.name

    def find(self, graph):
        return [n for n in graph.nodes if n.op == "Einsum"]

    def check(self, graph, match):
        equation = _equation(match)
        if len(match.inputs) != 2 or _plan(equation) is None:
            return f"{match.name}: {equation} is not a batched matrix product"
        return None

    def rewrite(self, graph, match, host):
        equation = _equation(match)
        a, b = match.inputs
        if _plan(equation):
            rank = len(equation.partition(",")[0])
            swapped = gs.Variable(f"{match.name}/transposed", b.dtype)
            graph.nodes.append(gs.Node("Transpose", f"{match.name}/transpose", attrs={
                "perm": list(range(rank - 2)) + [rank - 1, rank - 2]}, inputs=[b], outputs=[swapped]))
            b = swapped
        graph.nodes.append(gs.Node("MatMul", f"{match.name}/as_matmul", inputs=[a, b], outputs=list(match.outputs)))
        match.outputs.clear()
        return f"{match.name}: {equation} as MatMul"
