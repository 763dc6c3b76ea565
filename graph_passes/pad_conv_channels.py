"""Convolutions with few channels padded with zero channels, so rk3562's w8a16 compiler does not die.

RKNN limitation: rknn-toolkit2 2.5.0 compiling w8a16 for rk3562 kills its own process (SIGSEGV or
SIGABRT, at random between runs) in `rknn building` on a Conv whose input channels are not a multiple of
32, or with fewer than 8 output channels: every UNet's conv_in (4 latent channels in) and conv_out (4
out), and a pruned or narrow UNet's odd widths. Found by `rkconvert diagnose --target rk3562 --dtype
w8a16` on the tests' tiny UNet (842 nodes reduced to conv_in alone), then measured on one Conv (3x3, 8x8,
float32 weights) built alone: dies at 4, 8, 16, 24 and 48 input channels (32 out) and at 4 output
channels (32 in); builds at 32 -> 32, 64 -> 32, 32 -> 24, 16 and 8 (40 -> 32 built 3 times of 3: the
heap corruption does not always kill). Padding the input with a Pad node on the channel axis is refused
by the toolkit (ValueError). MatMul by a constant weight fails the same way (pad_matmul_inner_dim.py).

Rewrite (exact): the input gets zero channels up to the next multiple of 32 by a Concat with a zero
constant, the weight matching zero input columns; the output gets zero filters (and zero bias) up to 8 and a Slice keeps the
real ones. Per-output-channel weight quantization sees the same ranges for the real filters. Measured
alone: input padded 4 -> 32, 57.6 dB; output padded 4 -> 8 then sliced, 53.2 dB (rk3562 w8a16 against
ONNX Runtime). Runs for w8a16 on rk3562 only (targets/rk3562.py): float16 builds those widths as they are.

Verified: ONNX Runtime outputs before vs after are equal, and the tiny UNet that crashed builds
(tests/test_pad_conv_channels.py).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .framework import GraphPass, static_shape

IN_CHANNELS_MULTIPLE = 32
MIN_OUT_CHANNELS = 8


def _narrow(conv: gs.Node) -> bool:
    weight = conv.inputs[1]
    return isinstance(weight, gs.Constant) and weight.values.ndim == 4 and \
        (weight.shape[1] % IN_CHANNELS_MULTIPLE or weight.shape[0] < MIN_OUT_CHANNELS)


class PadConvChannels(GraphPass):
    name = "pad_conv_channels"
    needs_shapes = True
    problem_kind = "crash"
    problem = (f"Conv whose input channels are not a multiple of {IN_CHANNELS_MULTIPLE}, or with under "
               f"{MIN_OUT_CHANNELS} output channels: rknn-toolkit2 2.5.0 dies compiling it as w8a16")

    def where(self, match):
        return match.name

    def find(self, graph):
        return [n for n in graph.nodes if n.op == "Conv" and _narrow(n)]

    def check(self, graph, match):
        if match.attrs.get("group", 1) != 1:
            return f"{match.name}: grouped Conv (its channels cannot be padded independently)"
        x = static_shape(match.inputs[0].shape)
        if match.inputs[1].shape[1] % IN_CHANNELS_MULTIPLE and (x is None or len(x) != 4):
            return f"{match.name}: padding its input needs a static (N, C, H, W) shape"
        if len(match.inputs) > 2 and not isinstance(match.inputs[2], gs.Constant):
            return f"{match.name}: bias is not a constant"
        return None

    def rewrite(self, graph, match, host):
        weight = match.inputs[1].values
        out_channels, in_channels = weight.shape[:2]
        x, y = match.inputs[0], match.outputs[0]
        new_in = -(-in_channels // IN_CHANNELS_MULTIPLE) * IN_CHANNELS_MULTIPLE
        new_out = max(out_channels, MIN_OUT_CHANNELS)
        padded = np.zeros((new_out, new_in, *weight.shape[2:]), weight.dtype)
        padded[:out_channels, :in_channels] = weight
        match.inputs[1] = gs.Constant(f"{match.name}.padded_weight", padded)
        if len(match.inputs) > 2:
            bias = np.zeros(new_out, match.inputs[2].values.dtype)
            bias[:out_channels] = match.inputs[2].values
            match.inputs[2] = gs.Constant(f"{match.name}.padded_bias", bias)
        if new_in > in_channels:
            n, _, height, width = static_shape(x.shape)
            zeros = gs.Constant(f"{match.name}.zero_channels", np.zeros((n, new_in - in_channels, height, width), x.dtype))
            wide = gs.Variable(f"{match.name}/padded_input", x.dtype, [n, new_in, height, width])
            graph.nodes.append(gs.Node("Concat", f"{match.name}/pad_input", attrs={"axis": 1}, inputs=[x, zeros],
                                       outputs=[wide]))
            match.inputs[0] = wide
        if new_out > out_channels:
            wide = gs.Variable(f"{match.name}/padded_output", y.dtype, None)
            match.outputs[0] = wide
            ends = [gs.Constant(f"{match.name}.slice_{k}", np.array([v], np.int64))
                    for k, v in (("starts", 0), ("ends", out_channels), ("axes", 1))]
            graph.nodes.append(gs.Node("Slice", f"{match.name}/real_output", inputs=[wide, *ends], outputs=[y]))
        return f"{match.name}: {in_channels} -> {out_channels} channels computed as {new_in} -> {new_out}"
