"""The operator patterns diffusion models are made of, as torch.onnx writes them, each with random
shapes, constants and variants: what the fuzzer strings together.

A pattern takes the tensor so far and returns the next. Image features are rank 4 (1, C, H, W), tokens
rank 3 (1, T, C), embeddings rank 2 (1, C). Each returns a name for its variant, so a failure's graph
says what it was made of.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from converter.fuzz.builder import Builder, Tensor

MAX_TOKENS = 256  # keeps an attention's scores under 256 x 256 a head: each graph builds in seconds


@dataclass(frozen=True)
class Pattern:
    name: str
    ranks: tuple[int, ...]  # the ranks of tensor it takes
    write: Callable[[Builder, Tensor], tuple[Tensor, str]]
    weight: float = 1.0  # how often it is picked among those that apply


def _pick(b: Builder, options, p=None):
    return options[b.rng.choice(len(options), p=p)]


def _vector(b: Builder, values: np.ndarray, stem: str = "c") -> str:
    return b.const(values.astype(np.float32), stem)


def conv(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """Every ResNet block, down- and upsampler: 3x3 (or 1x1) Conv, stride 2 on the way down."""
    _, c, h, w = x.shape
    k = _pick(b, [1, 3])
    stride = _pick(b, [1, 2]) if h >= 4 and h % 2 == 0 else 1
    out = _pick(b, [c, max(4, c // 2), min(2 * c, 128)])
    inputs = [x.name, b.weight(out, c, k, k)]
    if b.rng.random() < 0.7:
        inputs.append(_vector(b, b.rng.standard_normal(out) * 0.1, "bias"))
    size = lambda n: (n + 2 * (k // 2) - k) // stride + 1  # noqa: E731
    y = b.op("Conv", inputs, (1, out, size(h), size(w)), kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride] * 2)
    return y, f"conv{k}x{k}/s{stride}"


def group_norm(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """GroupNorm as torch.onnx writes it at opset 17: Reshape to groups, InstanceNormalization, Reshape back,
    then the per-channel affine."""
    _, c, h, w = x.shape
    groups = _pick(b, [g for g in (1, 2, 4, 8, 16, 32) if c % g == 0])
    grouped = b.op("Reshape", [x.name, b.ints([1, groups, -1])], (1, groups, c // groups * h * w))
    normed = b.op("InstanceNormalization", [grouped.name, _vector(b, np.ones(groups)), _vector(b, np.zeros(groups))],
                  grouped.shape, epsilon=1e-5)
    back = b.op("Reshape", [normed.name, b.ints(x.shape)], x.shape)
    scaled = b.op("Mul", [back.name, _vector(b, 1 + 0.1 * b.rng.standard_normal((c, 1, 1)), "gamma")], x.shape)
    return b.op("Add", [scaled.name, _vector(b, 0.1 * b.rng.standard_normal((c, 1, 1)), "beta")], x.shape), \
        f"group_norm/{groups}"


def silu(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """SiLU, as x * Sigmoid(x)."""
    gate = b.op("Sigmoid", [x.name], x.shape)
    return b.op("Mul", [x.name, gate.name], x.shape), "silu"


def gelu(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """GELU in its erf form (torch's default) or the tanh approximation."""
    if b.rng.random() < 0.7:
        scaled = b.op("Div", [x.name, b.const(np.float32(math.sqrt(2)))], x.shape)
        erf = b.op("Erf", [scaled.name], x.shape)
        shifted = b.op("Add", [erf.name, b.const(np.float32(1))], x.shape)
        half = b.op("Mul", [x.name, shifted.name], x.shape)
        return b.op("Mul", [half.name, b.const(np.float32(0.5))], x.shape), "gelu/erf"
    cube = b.op("Pow", [x.name, b.const(np.float32(3))], x.shape)
    inner = b.op("Add", [x.name, b.op("Mul", [cube.name, b.const(np.float32(0.044715))], x.shape).name], x.shape)
    tanh = b.op("Tanh", [b.op("Mul", [inner.name, b.const(np.float32(math.sqrt(2 / math.pi)))], x.shape).name],
                x.shape)
    shifted = b.op("Add", [tanh.name, b.const(np.float32(1))], x.shape)
    half = b.op("Mul", [x.name, b.const(np.float32(0.5))], x.shape)
    return b.op("Mul", [half.name, shifted.name], x.shape), "gelu/tanh"


def resize(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """The upsampler's Resize, its optional roi left out (an empty name), by scales or by sizes."""
    _, c, h, w = x.shape
    mode = _pick(b, ["nearest", "linear", "cubic"], p=[0.6, 0.3, 0.1])
    transform = _pick(b, ["asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel"])
    factor = 2 if h <= 16 else 0.5
    shape = (1, c, int(h * factor), int(w * factor))
    attrs = {"mode": mode, "coordinate_transformation_mode": transform}
    if mode == "nearest":
        attrs["nearest_mode"] = _pick(b, ["floor", "round_prefer_floor"])
    if b.rng.random() < 0.5:
        inputs = [x.name, "", b.const(np.array([1, 1, factor, factor], np.float32))]
        how = "scales"
    else:
        inputs = [x.name, "", "", b.ints(shape)]
        how = "sizes"
    return b.op("Resize", inputs, shape, **attrs), f"resize/{mode}/{transform}/{how}"


def skip_concat(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """The up path's skip connection: features concatenated along channels with a branch of another range."""
    scale = _pick(b, [1.0, 100.0, 0.01])
    other = b.op("Mul", [x.name, b.const(np.float32(scale))], x.shape)
    first, second = (x, other) if b.rng.random() < 0.5 else (other, x)
    joined = b.op("Concat", [first.name, second.name], (1, 2 * x.shape[1], *x.shape[2:]), axis=1)
    return joined, f"skip_concat/x{scale:g}"


def swap_halves(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """Halves swapped along an axis (the time projection's flip_sin_to_cos), by Split, or by two Slices with
    or without their `steps` input."""
    axes = [a for a in range(1, x.rank) if x.shape[a] % 2 == 0]
    if not axes:
        return silu(b, x)
    axis = _pick(b, axes)
    half = x.shape[axis] // 2
    part = tuple(half if a == axis else n for a, n in enumerate(x.shape))
    how = _pick(b, ["split", "slice", "slice+steps"])
    if how == "split":
        low, high = b.ops("Split", [x.name, b.ints([half, half])], [part, part], axis=axis)
    else:
        extra = [b.ints([1])] if how == "slice+steps" else []
        bounds = lambda lo, hi: [b.ints([lo]), b.ints([hi]), b.ints([axis])] + extra  # noqa: E731
        low = b.op("Slice", [x.name, *bounds(0, half)], part)
        high = b.op("Slice", [x.name, *bounds(half, 2 * half)], part)
    return b.op("Concat", [high.name, low.name], x.shape, axis=axis), f"swap_halves/{how}/rank{x.rank}"


def to_tokens(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """A transformer block's way in: (1, C, H, W) to (1, H*W, C), reshaped then transposed or the reverse."""
    _, c, h, w = x.shape
    if h * w > MAX_TOKENS:  # first down to a size whose attention builds in seconds
        x = b.op("Conv", [x.name, b.weight(c, c, 3, 3)], (1, c, h // 2, w // 2), kernel_shape=[3, 3], pads=[1] * 4,
                 strides=[2, 2])
        _, c, h, w = x.shape
    if b.rng.random() < 0.5:
        flat = b.op("Reshape", [x.name, b.ints([1, c, h * w])], (1, c, h * w))
        return b.op("Transpose", [flat.name], (1, h * w, c), perm=[0, 2, 1]), "to_tokens/reshape+transpose"
    last = b.op("Transpose", [x.name], (1, h, w, c), perm=[0, 2, 3, 1])
    return b.op("Reshape", [last.name, b.ints([1, h * w, c])], (1, h * w, c)), "to_tokens/transpose+reshape"


def to_image(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """A transformer block's way out: (1, T, C) back to a square (1, C, H, W)."""
    _, t, c = x.shape
    side = math.isqrt(t)
    if side * side != t:
        return layer_norm(b, x)
    back = b.op("Transpose", [x.name], (1, c, t), perm=[0, 2, 1])
    return b.op("Reshape", [back.name, b.ints([1, c, side, side])], (1, c, side, side)), "to_image"


def layer_norm(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """LayerNorm over the last axis: the opset-17 op, or written out (ReduceMean, Sub, Pow, Sqrt, Div)."""
    c = x.shape[-1]
    gamma, beta = _vector(b, 1 + 0.1 * b.rng.standard_normal(c)), _vector(b, 0.1 * b.rng.standard_normal(c))
    if b.rng.random() < 0.6:
        return b.op("LayerNormalization", [x.name, gamma, beta], x.shape, axis=-1, epsilon=1e-5), "layer_norm/op"
    reduced = (*x.shape[:-1], 1)
    mean = b.op("ReduceMean", [x.name], reduced, axes=[-1], keepdims=1)
    centred = b.op("Sub", [x.name, mean.name], x.shape)
    square = b.op("Pow", [centred.name, b.const(np.float32(2))], x.shape)
    var = b.op("ReduceMean", [square.name], reduced, axes=[-1], keepdims=1)
    std = b.op("Sqrt", [b.op("Add", [var.name, b.const(np.float32(1e-5))], reduced).name], reduced)
    normed = b.op("Div", [centred.name, std.name], x.shape)
    return b.op("Add", [b.op("Mul", [normed.name, gamma], x.shape).name, beta], x.shape), "layer_norm/written"


def linear(b: Builder, x: Tensor, out: int | None = None) -> Tensor:
    c = x.shape[-1]
    out = out or c
    y = b.op("MatMul", [x.name, b.weight(c, out, fan_in=c)], (*x.shape[:-1], out))
    if b.rng.random() < 0.5:
        y = b.op("Add", [y.name, _vector(b, 0.1 * b.rng.standard_normal(out), "bias")], y.shape)
    return y


def feed_forward(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """A transformer's feed-forward: GEGLU (one projection split into value and gate by Split or Slice)
    or GELU between two Linear layers."""
    c = x.shape[-1]
    inner = 2 * c
    if b.rng.random() < 0.6:
        both = linear(b, x, 2 * inner)
        part = (*x.shape[:-1], inner)
        if b.rng.random() < 0.5:
            value, gate = b.ops("Split", [both.name, b.ints([inner, inner])], [part, part], axis=-1)
            how = "geglu/split"
        else:
            value = b.op("Slice", [both.name, b.ints([0]), b.ints([inner]), b.ints([-1])], part)
            gate = b.op("Slice", [both.name, b.ints([inner]), b.ints([2 * inner]), b.ints([-1])], part)
            how = "geglu/slice"
        gated, _ = gelu(b, gate)
        hidden = b.op("Mul", [value.name, gated.name], part)
    else:
        hidden, _ = gelu(b, linear(b, x, inner))
        how = "gelu_mlp"
    return linear(b, hidden, c), how


def attention(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """Multi-head attention as exporters write it: self or cross (a second input), heads split into a rank-4
    or a batch-folded rank-3 layout, the scale on the scores, on q, or split over q and k, scores by MatMul
    or Einsum, an additive bias or not, then the output projection."""
    _, t, c = x.shape
    heads = _pick(b, [h for h in (1, 2, 4, 8) if c % h == 0 and c // h >= 4] or [1])
    d = c // heads
    if b.rng.random() < 0.4:
        context = b.input("context", (1, _pick(b, [8, 16]), _pick(b, [16, 32])))
        kind = "cross"
    else:
        context, kind = x, "self"
    s = context.shape[1]
    q, k, v = linear(b, x), linear(b, context, c), linear(b, context, c)
    folded = b.rng.random() < 0.4  # diffusers' head_to_batch_dim: (heads, T, d)

    def split_heads(y: Tensor, n: int) -> Tensor:
        four = b.op("Reshape", [y.name, b.ints([1, n, heads, d])], (1, n, heads, d))
        moved = b.op("Transpose", [four.name], (1, heads, n, d), perm=[0, 2, 1, 3])
        return b.op("Reshape", [moved.name, b.ints([heads, n, d])], (heads, n, d)) if folded else moved

    qh, kh, vh = split_heads(q, t), split_heads(k, s), split_heads(v, s)
    lead = qh.shape[:-2]
    scale_at = _pick(b, ["scores", "q", "q+k", "div"])
    if scale_at == "q":
        qh = b.op("Mul", [qh.name, b.const(np.float32(d ** -0.5))], qh.shape)
    elif scale_at == "q+k":
        qh = b.op("Mul", [qh.name, b.const(np.float32(d ** -0.25))], qh.shape)
        kh = b.op("Mul", [kh.name, b.const(np.float32(d ** -0.25))], kh.shape)
    einsum = b.rng.random() < 0.3
    letters = "bh" if not folded else "b"
    scores_shape = (*lead, t, s)
    if einsum:
        sub = letters[:len(lead)]
        scores = b.op("Einsum", [qh.name, kh.name], scores_shape, equation=f"{sub}id,{sub}jd->{sub}ij")
    else:
        perm = list(range(len(lead))) + [len(lead) + 1, len(lead)]
        kt = b.op("Transpose", [kh.name], (*lead, d, s), perm=perm)
        scores = b.op("MatMul", [qh.name, kt.name], scores_shape)
    if scale_at == "scores":
        scores = b.op("Mul", [scores.name, b.const(np.float32(d ** -0.5))], scores_shape)
    elif scale_at == "div":
        scores = b.op("Div", [scores.name, b.const(np.float32(d ** 0.5))], scores_shape)
    bias = b.rng.random() < 0.3
    if bias:
        scores = b.op("Add", [scores.name, _vector(b, b.rng.standard_normal((t, s)), "attn_bias")], scores_shape)
    probs = b.op("Softmax", [scores.name], scores_shape, axis=-1)
    if einsum:
        sub = letters[:len(lead)]
        out = b.op("Einsum", [probs.name, vh.name], (*lead, t, d), equation=f"{sub}ij,{sub}jd->{sub}id")
    else:
        out = b.op("MatMul", [probs.name, vh.name], (*lead, t, d))
    if folded:
        out = b.op("Reshape", [out.name, b.ints([1, heads, t, d])], (1, heads, t, d))
    merged = b.op("Transpose", [out.name], (1, t, heads, d), perm=[0, 2, 1, 3])
    flat = b.op("Reshape", [merged.name, b.ints([1, t, c])], (1, t, c))
    variant = (f"attention/{kind}/{'folded' if folded else 'rank4'}/scale-{scale_at}/"
               f"{'einsum' if einsum else 'matmul'}{'/bias' if bias else ''}/heads{heads}")
    return linear(b, flat), variant


def time_embedding(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """A ResNet block's time conditioning: an embedding input through SiLU and Gemm, added per channel."""
    c = x.shape[1]
    width = _pick(b, [16, 32, 64])
    embedding = b.input("temb", (1, width))
    act, _ = silu(b, embedding)
    trans_b = int(b.rng.random() < 0.5)
    weight = b.weight(c, width, fan_in=width) if trans_b else b.weight(width, c, fan_in=width)
    projected = b.op("Gemm", [act.name, weight, _vector(b, 0.1 * b.rng.standard_normal(c), "bias")], (1, c),
                     transB=trans_b)
    per_channel = b.op("Reshape", [projected.name, b.ints([1, c, 1, 1])], (1, c, 1, 1))
    return b.op("Add", [x.name, per_channel.name], x.shape), f"time_embedding/gemm-transB{trans_b}"


def softmax(b: Builder, x: Tensor) -> tuple[Tensor, str]:
    """Softmax along an axis other than the attention's."""
    axis = _pick(b, list(range(1, x.rank)))
    return b.op("Softmax", [x.name], x.shape, axis=axis), f"softmax/axis{axis}/rank{x.rank}"


PATTERNS = (
    Pattern("conv", (4,), conv, 2.0),
    Pattern("group_norm", (4,), group_norm, 1.5),
    Pattern("silu", (3, 4), silu),
    Pattern("gelu", (3, 4), gelu, 0.5),
    Pattern("resize", (4,), resize),
    Pattern("skip_concat", (4,), skip_concat, 0.5),
    Pattern("swap_halves", (3, 4), swap_halves, 0.7),
    Pattern("to_tokens", (4,), to_tokens, 1.5),
    Pattern("to_image", (3,), to_image),
    Pattern("layer_norm", (3,), layer_norm),
    Pattern("feed_forward", (3,), feed_forward),
    Pattern("attention", (3,), attention, 2.0),
    Pattern("time_embedding", (4,), time_embedding, 0.5),
    Pattern("softmax", (3, 4), softmax, 0.3),
)
