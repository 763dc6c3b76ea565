"""Split a MatMul whose weight holds several projections side by side (then Split) into one MatMul each.

RKNN limitation: rknn-toolkit2 2.5.0 converts `MatMul(x, W[C, 3C]) -> Split -> 3 x Reshape` (the
fused q/k/v projection onnxsim 0.8.1 makes of diffusers' self-attention) unfaithfully: its rules
`fuse_multihead_attention_reshape_to_gather_split` then `fuse_exmatmul_gather` reorder the weight
wrongly. Found with the per-layer report: the first layer off was the fused MatMul of
down_blocks.0's attn1 (golden cosine 0.055); the output of a tiny SD 1.5 UNet fell from 67.4 dB to
21.4 dB PSNR against ONNX Runtime. Unfused, as torch exports it, the toolkit converts it faithfully.

Rewrite: one MatMul per Split output, with that output's block of weight columns; named after the
attention module the outputs feed, so the layer report can name them.

Verified: ONNX Runtime outputs before vs after agree (tests/test_split_fused_qkv_projection.py),
and the simplified tiny UNet's RKNN output goes back from 21 dB to 67 dB PSNR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .framework import GraphPass


@dataclass
class FusedProjection:
    matmul: gs.Node
    split: gs.Node


def _split_sizes(split: gs.Node, columns: int) -> list[int] | None:
    if len(split.inputs) > 1 and isinstance(split.inputs[1], gs.Constant):
        return [int(v) for v in split.inputs[1].values]
    if "split" in split.attrs:
        return [int(v) for v in split.attrs["split"]]
    parts = len(split.outputs)
    return [columns // parts] * parts if columns % parts == 0 else None


def _module_prefix(split: gs.Node) -> str:
    """`/down_blocks.0/.../attn1` from the name of a node reading the split outputs, if it has one."""
    for out in split.outputs:
        for reader in out.outputs:
            if reader.name.startswith("/") and reader.name.count("/") > 1:
                return reader.name.rsplit("/", 1)[0]
    return split.name


class SplitFusedQkvProjection(GraphPass):
    name = "split_fused_qkv_projection"
    problem_kind = "unfaithful"
    problem = ("MatMul of several projections then Split: rknn-toolkit2 2.5.0 reorders the weight wrongly "
               "(fuse_multihead_attention_reshape_to_gather_split)")

    def where(self, match):
        return match.matmul.name

    def find(self, graph):
        for split in graph.nodes:
            if split.op != "Split" or not split.inputs[0].inputs:
                continue
            matmul = split.inputs[0].inputs[0]
            if matmul.op == "MatMul" and isinstance(matmul.inputs[1], gs.Constant):
                yield FusedProjection(matmul, split)

    def check(self, graph, match):
        weight = match.matmul.inputs[1].values
        rank = len(match.matmul.outputs[0].shape or match.matmul.inputs[0].shape or [])
        axis = match.split.attrs.get("axis", 0)
        if weight.ndim != 2 or axis not in (-1, rank - 1):
            return f"{match.split.name}: splits axis {axis}, not the projection's output columns"
        if len(match.matmul.outputs[0].outputs) != 1:
            return f"{match.matmul.name}: its output is also read by nodes other than {match.split.name}"
        sizes = _split_sizes(match.split, weight.shape[1])
        if sizes is None or sum(sizes) != weight.shape[1]:
            return f"{match.split.name}: split sizes do not cover the {weight.shape[1]} weight columns"
        return None

    def rewrite(self, graph, match, host):
        weight = match.matmul.inputs[1].values
        sizes = _split_sizes(match.split, weight.shape[1])
        prefix = _module_prefix(match.split)
        start = 0
        for i, (out, size) in enumerate(zip(list(match.split.outputs), sizes)):
            name = f"{prefix}/fused_projection.{i}/MatMul"
            block = gs.Constant(f"{name}.weight", np.ascontiguousarray(weight[:, start:start + size]))
            graph.nodes.append(gs.Node("MatMul", name, inputs=[match.matmul.inputs[0], block], outputs=[out]))
            start += size
        match.split.outputs = []
        return f"{match.matmul.name} + {match.split.name} -> {len(sizes)} MatMuls of {sizes} columns ({prefix})"
