"""GroupNorm at a 2x2 spatial size as convolutions, so it stays on the NPU.

RKNN limitation: torch exports GroupNorm as Reshape(1, G, -1) -> InstanceNormalization -> Reshape(1, C,
H, W) -> Mul -> Add. rknn-toolkit2 2.5.0 fuses that into exNorm on a (G, C/G*H*W, 1, 1) layout and,
when H x W is 2 x 2, runs the Reshape back to (1, C, 2, 2) on the CPU: 12 layers of the SD 1.5-shaped
demo at 128 px (its 4th stage is 2 x 2), any small latent of a pruned or low-resolution model. Measured
on a Conv -> GroupNorm -> Conv model with the real toolkit: 2 x 2 falls back with C = 96 or 160
and with the Reshape as (1, G, C/G, H*W), (1, G, C/G*H*W, 1), (1, G, 1, C/G*H*W) or through a
(1, 4C, 1, 1) space-to-depth; 1 x 1 and 4 x 4 stay on the NPU.

Rewrite (exact): the group mean at every position is a 1x1 Conv whose block-diagonal weight averages
each group's channels, then a depthwise Conv whose kernel spans the whole H x W input from every
output position (2H-1 square, zero padding H-1: the taps that miss the input read padding), every
weight 1 / (H * W); the variance is the same pair on the squared deviation; then (x - mean) /
sqrt(var + eps). No Reshape is left, and no broadcast. Tried first and dropped: pooling to (1, C, 1, 1)
and subtracting that from x (the toolkit inserts Expand layers that match no ONNX tensor), and one
grouped Conv instead of the pair (SIGSEGV in the toolkit's RKNNTileGroupConv at 40 channels per group:
C = 1280, G = 32). Measured on Conv -> GroupNorm -> Conv: 0 CPU layers, 78.1 dB (C = 160, G = 8),
76.4 dB (96, 16), 73.6 dB (1280, 32) against ONNX Runtime.

Verified: ONNX Runtime outputs before vs after agree within float32 rounding, and the toolkit's
layer table shows no CPU layer (tests/test_group_norm_as_conv.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .framework import GraphPass, only_reader, static_shape

# Spatial sizes (H x W) at which the toolkit was seen running the GroupNorm's Reshape on the CPU.
FALLBACK_SIZES = {(2, 2)}


@dataclass
class GroupNorm:
    flatten: gs.Node  # Reshape(1, G, ...)
    norm: gs.Node  # InstanceNormalization
    restore: gs.Node  # Reshape back to (1, C, H, W)


def _values(tensor) -> np.ndarray | None:
    """A constant's values, whether an initializer or a Constant node's output (as torch exports them)."""
    if isinstance(tensor, gs.Constant):
        return tensor.values
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is not None and producer.op == "Constant" and isinstance(producer.attrs.get("value"), gs.Constant):
        return producer.attrs["value"].values
    return None


class GroupNormAsConv(GraphPass):
    name = "group_norm_as_conv"
    needs_shapes = True
    problem_kind = "cpu"
    problem = "GroupNorm at 2x2: rknn-toolkit2 2.5.0 runs its Reshape back to (1, C, 2, 2) on the CPU"

    def where(self, match):
        return match.norm.name

    def find(self, graph):
        for norm in graph.nodes:
            if norm.op != "InstanceNormalization" or not norm.inputs[0].inputs:
                continue
            flatten, restore = norm.inputs[0].inputs[0], only_reader(norm.outputs[0])
            if flatten.op == "Reshape" and restore is not None and restore.op == "Reshape":
                yield GroupNorm(flatten, norm, restore)

    def check(self, graph, match):
        x_shape = static_shape(match.flatten.inputs[0].shape)
        grouped = static_shape(match.norm.inputs[0].shape)
        if x_shape is None or grouped is None or len(x_shape) != 4 or x_shape[0] != 1:
            return f"{match.norm.name}: needs static shapes (1, C, H, W) around it"
        if static_shape(match.restore.outputs[0].shape) != x_shape:
            return f"{match.norm.name}: the Reshape after it does not restore {x_shape}"
        channels, groups = x_shape[1], grouped[1]
        if grouped[0] != 1 or channels % groups or np.prod(grouped) != np.prod(x_shape):
            return f"{match.norm.name}: input {grouped} is not {groups} groups of (1, {channels}, H, W)"
        if any(_values(t) is None for t in match.norm.inputs[1:3]):
            return f"{match.norm.name}: scale and bias are not constants"
        if tuple(x_shape[2:]) not in FALLBACK_SIZES:
            return f"{match.norm.name}: {x_shape[2]}x{x_shape[3]} stays on the NPU as exported"
        return None

    def rewrite(self, graph, match, host):
        x = match.flatten.inputs[0]
        channels, groups = x.shape[1], match.norm.inputs[0].shape[1]
        size, (height, width) = channels // groups, x.shape[2:]
        prefix = f"{match.norm.name.rsplit('/', 1)[0]}/conv_group_norm"
        span = max(height, width)
        block = np.zeros((channels, channels, 1, 1), np.float32)
        for c in range(channels):
            block[c, c // size * size:(c // size + 1) * size] = 1.0 / size
        block = gs.Constant(f"{prefix}.group_average", block)
        spatial = gs.Constant(f"{prefix}.spatial_average", np.full((channels, 1, 2 * span - 1, 2 * span - 1),
                                                                    1.0 / (height * width), np.float32))
        eps = gs.Constant(f"{prefix}.eps", np.array(match.norm.attrs.get("epsilon", 1e-5), np.float32))

        def node(op: str, name: str, inputs: list, **attrs) -> gs.Variable:
            out = gs.Variable(f"{prefix}/{name}_output_0", np.float32, x.shape)
            graph.nodes.append(gs.Node(op, f"{prefix}/{name}", attrs=attrs, inputs=inputs, outputs=[out]))
            return out

        def group_mean(name: str, value: gs.Variable) -> gs.Variable:
            over_channels = node("Conv", f"{name}_over_channels", [value, block])
            return node("Conv", f"{name}_over_space", [over_channels, spatial], group=channels, pads=[span - 1] * 4)

        centred = node("Sub", "centre", [x, group_mean("mean", x)])
        var = group_mean("variance", node("Mul", "square", [centred, centred]))
        std = node("Sqrt", "std", [node("Add", "add_eps", [var, eps])])
        per_channel = [1, channels, 1, 1]
        out = match.restore.outputs[0]
        scale, bias = (np.repeat(_values(t).astype(np.float32), size).reshape(per_channel) for t in match.norm.inputs[1:3])
        normed = [centred, std]
        if np.any(scale != 1) or np.any(bias != 0):
            normed = [node("Div", "normalise", normed), gs.Constant(f"{prefix}.scale", scale)]
            normed = [node("Mul", "scale", normed), gs.Constant(f"{prefix}.bias", bias)]
            graph.nodes.append(gs.Node("Add", f"{prefix}/bias", inputs=normed, outputs=[out]))
        else:
            graph.nodes.append(gs.Node("Div", f"{prefix}/normalise", inputs=normed, outputs=[out]))
        match.restore.outputs = []
        return f"{match.norm.name}: GroupNorm of {groups} groups at {height}x{width} -> 1x1 + depthwise Conv mean and variance"
