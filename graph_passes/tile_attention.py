"""Split each attention along its query axis into tiles: scores, softmax and output per tile, then Concat.

RKNN limitation: at 512² the first SD 1.5 self-attention forms an 8 x 4096 x 4096 score matrix
(256 MiB in float16); RK3588's NPU can use ~956 KB of SRAM, and rknn-toolkit2 2.5.0 offers
`enable_flash_attention` only for RK3562 / RK3576. The toolkit fuses MatMul/Softmax/MatMul into one
`exSDPAttention` layer whose scratch buffer (`_exSecondary` in the memory map) grows with queries x
keys (~170 MB at 4096 tokens), and its cycle estimate leaves that layer out (0 cycles).
Tiling along the queries bounds the scores any one layer forms (EdgeFusion's model-level tiling;
Apple's SPLIT_EINSUM_V2 chunks queries the same way). Exact: softmax rows are independent, and every
tile reads the same keys and values.

Pattern: MatMul(q, kᵀ) [-> Mul/Div by a scalar] -> Softmax(last axis) -> MatMul(·, v), q's query axis
being its second-last. Rewrite: Split q along that axis into near-equal tiles (N need not divide the
sequence), the chain once per tile, Concat along the same axis. A tile's tensor is named after the one
it is a tile of, `/tile<i>` before its last component (`attn1/Softmax_output_0` ->
`attn1/tile3/Softmax_output_0`): reports still place it in its diffusers module, and a graph left whole
(the hybrid search's proxy resolution) finds it by dropping `/tile<i>` (converter/toolkit/naming.py).

Verified: ONNX Runtime, tiled vs untiled, self- and cross-attention, N dividing the sequence or not
(tests/test_tile_attention.py); the tiny UNet's tiled build in the simulator against its untiled
PSNR; the toolkit's estimate of tiled vs untiled blocks in tools/bench_tiling.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from .framework import GraphPass, only_reader, static_shape

SCALE_OPS = ("Mul", "Div")

# (queries, keys, heads, head_dim) of one attention -> how many query tiles it gets (1: left whole).
TilePolicy = Callable[[int, int, int, int], int]


@dataclass
class Attention:
    scores: gs.Node  # MatMul(q, kᵀ)
    scale: gs.Node | None  # Mul/Div of the scores by a scalar, when the export put the scale there
    softmax: gs.Node
    output: gs.Node  # MatMul(probabilities, v)

    @property
    def chain(self) -> list[gs.Node]:
        return [n for n in (self.scores, self.scale, self.softmax, self.output) if n is not None]


def _is_scalar_constant(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Constant) and tensor.values.size == 1


def tile_sizes(queries: int, tiles: int) -> list[int]:
    """Near-equal tile lengths covering `queries`, the longer ones first."""
    base, extra = divmod(queries, tiles)
    return [base + 1] * extra + [base] * (tiles - extra)


def attention_shape(match: Attention) -> tuple[int, int, int, int] | None:
    """(queries, keys, heads, head_dim) from inferred shapes, or None when they are not static."""
    q = static_shape(match.scores.inputs[0].shape)
    k_t = static_shape(match.scores.inputs[1].shape)
    if q is None or not k_t or len(q) < 2:
        return None
    heads = int(np.prod(q[:-2])) if len(q) > 2 else 1
    return q[-2], k_t[-1], heads, q[-1]


class TileAttention(GraphPass):
    name = "tile_attention"
    needs_shapes = True

    def __init__(self, tiles: int | TilePolicy = 1):
        self.policy: TilePolicy = tiles if callable(tiles) else (lambda *_: tiles)

    def where(self, match):
        return match.output.name

    def find(self, graph):
        for softmax in graph.nodes:
            if softmax.op != "Softmax" or not softmax.inputs[0].inputs:
                continue
            before = softmax.inputs[0].inputs[0]
            scale = before if before.op in SCALE_OPS and _is_scalar_constant(before.inputs[1]) else None
            scores = scale.inputs[0].inputs[0] if scale is not None and scale.inputs[0].inputs else before
            output = only_reader(softmax.outputs[0])
            if scores.op == "MatMul" and output is not None and output.op == "MatMul" \
                    and output.inputs[0] is softmax.outputs[0]:
                yield Attention(scores, scale, softmax, output)

    def check(self, graph, match):
        shape = attention_shape(match)
        if shape is None:
            return f"{match.output.name}: query shape not static"
        rank = len(match.scores.inputs[0].shape)
        if match.softmax.attrs.get("axis", -1) not in (-1, rank - 1):
            return f"{match.softmax.name}: softmax not over the keys (last axis)"
        if any(len(n.outputs[0].outputs) != 1 for n in match.chain[:-1]):
            return f"{match.output.name}: scores or probabilities read elsewhere too"
        if min(self.policy(*shape), shape[0]) < 2:
            return f"{match.output.name}: 1 tile for {shape[0]} queries x {shape[1]} keys, left whole"
        return None

    def rewrite(self, graph, match, host):
        queries, keys, heads, head_dim = attention_shape(match)
        sizes = tile_sizes(queries, min(self.policy(queries, keys, heads, head_dim), queries))
        axis = len(match.scores.inputs[0].shape) - 2
        prefix = match.output.name.rsplit("/", 1)[0]
        q, k_t, v = match.scores.inputs[0], match.scores.inputs[1], match.output.inputs[1]
        q_tiles = [gs.Variable(tile_name(q.name, i), q.dtype) for i in range(len(sizes))]
        graph.nodes.append(gs.Node("Split", f"{prefix}/tile_split", attrs={"axis": axis},
                                   inputs=[q, gs.Constant(f"{prefix}/tile_sizes", np.array(sizes, np.int64))],
                                   outputs=q_tiles))
        outs = []
        for i, q_tile in enumerate(q_tiles):
            x = self._node(graph, match.scores, i, [q_tile, k_t])
            if match.scale is not None:
                x = self._node(graph, match.scale, i, [x, match.scale.inputs[1]])
            x = self._node(graph, match.softmax, i, [x])
            outs.append(self._node(graph, match.output, i, [x, v]))
        graph.nodes.append(gs.Node("Concat", f"{prefix}/tile_concat", attrs={"axis": axis}, inputs=outs,
                                   outputs=list(match.output.outputs)))
        match.output.outputs = []
        return f"{prefix}: {queries} queries x {keys} keys, {heads} heads -> {len(sizes)} tiles of {sizes[0]}"

    @staticmethod
    def _node(graph: gs.Graph, untiled: gs.Node, tile: int, inputs: list) -> gs.Variable:
        out = gs.Variable(tile_name(untiled.outputs[0].name, tile), inputs[0].dtype)
        graph.nodes.append(gs.Node(untiled.op, tile_name(untiled.name, tile), attrs=dict(untiled.attrs),
                                   inputs=inputs, outputs=[out]))
        return out


def tile_name(name: str, tile: int) -> str:
    """Tile `tile`'s copy of the node or tensor `name`."""
    scope, slash, last = name.rpartition("/")
    return f"{scope}{slash}tile{tile}/{last}"
