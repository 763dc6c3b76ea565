"""Measured sensitivity: what quantizing each activation costs at the model's output, one at a time.

For a w8a8 build the toolkit quantizes every layer's output to int8 with the scale and zero point its
calibration chose (the build's `quantization.cfg`). This module emulates that quantization in ONNX
Runtime on the graph the toolkit was handed, for one tensor at a time (QuantizeLinear and
DequantizeLinear with the toolkit's own scale and zero point), on several calibration inputs, and ranks
the tensors by the noise each adds at the output alone: the order in which the hybrid search keeps
layers in float16.

Why this and not the alternatives (issue 29):
- The per-layer report's "added noise" is read off one dump of the fully quantized model: it blames
  where error appears, not what it costs at the output, and misses tensors whose small local error is
  amplified downstream (the demo needed 448 of 611 layers in float16 for +6 dB with that order).
- The toolkit's accuracy_analysis reports each layer fed its float input ("single"): again local error.
- Per-layer toolkit builds would be exact but cost one build per layer.
Which ONNX tensor holds a toolkit tensor's values is decided by its range: the toolkit's config gives
the range it observed on the calibration set, ONNX Runtime gives each tensor's on the same set, and the
tensor its name starts from or one up to MATCH_DEPTH nodes after it must agree (`_sw` tensors are the
SiLU after the named one: matched by name alone, the emulation put the SiLU's range on the GroupNorm
before it, 13 dB worse than the simulator on a tiny UNet). A toolkit tensor no ONNX tensor agrees with
is not emulated (its own rewrite computes something the graph has no name for) and is never ranked.
An emulation runs every candidate in one ONNX Runtime session: the fake quantization of every tensor is
in the graph, gated by one input vector (1 quantizes that tensor, 0 leaves it float), so a measurement is
one inference per tensor per input. Weights are not emulated: the toolkit quantizes them per channel,
which costs little next to per-tensor activations (`Emulation.curve` at k = 0, everything quantized,
against the simulator's w8a8 output says how much is left out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converter.common import onnx_runtime
from converter.common.accuracy import compare
from converter.common.onnx_graph import Graph
from converter.toolkit.quant_config import QuantizedTensor

MASK = "rkconvert_quantize"  # the probe graph's extra input: 1.0 quantizes tensor i, 0.0 leaves it float
MATCH_DEPTH = 8  # nodes after the named tensor where a toolkit tensor's values are looked for
# Range agreement needed, relative to the range's width: the toolkit's float run and ONNX Runtime's
# round differently (1e-6 relative seen), a different tensor is off by far more.
RANGE_TOLERANCE = 0.01
# Only names ending in this hold values past the tensor they start from (the demo: 90 of 719, every one
# of the others its start tensor when matched by range). A proxy's ranges are near the toolkit's, not
# equal: the nearest of the tensors after it, if this close (relative to the width), holds such a name.
FUSED, PROXY_RANGE_TOLERANCE = "_sw", 0.5


@dataclass(frozen=True)
class Sensitivity:
    tensor: str  # the ONNX tensor quantized alone
    names: tuple[str, ...]  # the toolkit's names for it (kept float16 together)
    noise: float  # output noise power over output power, mean over the inputs, this tensor alone quantized

    @property
    def alone_db(self) -> float:
        """Output PSNR-like figure with only this tensor quantized (signal over noise power, dB)."""
        return -10 * math.log10(self.noise) if self.noise > 0 else math.inf


@dataclass(frozen=True)
class Point:
    tensor: str
    names: tuple[str, ...]
    scale: float
    zero_point: int


def points(quantized: list[QuantizedTensor], graph: Graph, ranges: dict[str, tuple[float, float]],
           proxy: bool = False) -> list[Point]:
    """One point per ONNX tensor whose observed range (`ranges`, ONNX Runtime on the calibration set) is
    the one a toolkit tensor observed; several toolkit names can hold one tensor (its layout changes, or the
    tiles of an attention left whole here). In a `proxy` (the model at a smaller resolution, whose ranges
    are not the toolkit's) a name holds the tensor it starts from, unless it ends in FUSED: that one the
    nearest in range of those after it, within PROXY_RANGE_TOLERANCE."""
    by_tensor: dict[str, list[QuantizedTensor]] = {}
    for q in quantized:
        if proxy and not q.name.endswith(FUSED):
            tensor = q.start if q.start in ranges else None
        else:
            tensor = _holding(q, graph, ranges, PROXY_RANGE_TOLERANCE if proxy else RANGE_TOLERANCE)
        if tensor is not None:
            by_tensor.setdefault(tensor, []).append(q)
    return grouped(by_tensor)


def grouped(by_tensor: dict[str, list[QuantizedTensor]]) -> list[Point]:
    """A point per tensor, named by its toolkit tensors, each name once (a tensor where two parts meet is
    quantized by both, under one name), with the first one's scale."""
    return [Point(t, tuple(dict.fromkeys(q.name for q in qs)), qs[0].scale, qs[0].zero_point)
            for t, qs in by_tensor.items()]


def _holding(q: QuantizedTensor, graph: Graph, ranges: dict[str, tuple[float, float]],
             tolerance: float) -> str | None:
    if q.start is None:
        return None
    width = max(q.high - q.low, 1e-12)

    def miss(tensor: str) -> float:
        low, high = ranges[tensor]
        return (abs(low - q.low) + abs(high - q.high)) / width

    candidates = [t for t in graph.downstream(q.start, MATCH_DEPTH) if t in ranges]
    best = min(candidates, key=miss, default=None)
    return best if best is not None and miss(best) <= tolerance else None


def observed_ranges(onnx_path: Path, tensors: set[str], feeds: list[dict[str, np.ndarray]],
                    scratch: Path) -> dict[str, tuple[float, float]]:
    """Each of `tensors`' (min, max) over `feeds`, in ONNX Runtime."""
    marked = onnx_runtime.beside_weights(onnx_runtime.with_outputs(onnx_path, sorted(tensors)), onnx_path,
                                         scratch / "ranges")
    session = onnx_runtime.session(marked)
    ranges: dict[str, tuple[float, float]] = {}
    for feed in feeds:
        for name, value in onnx_runtime.run(session, feed).items():
            if name in tensors and value.size:
                low, high = float(value.min()), float(value.max())
                seen = ranges.get(name, (low, high))
                ranges[name] = (min(seen[0], low), max(seen[1], high))
    return ranges


def float_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors of `model` known to be float32 (graph inputs and inferred node outputs)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {v.name for v in infos if v.type.tensor_type.elem_type == TensorProto.FLOAT}


def probe_model(model: onnx.ModelProto, where: list[Point]) -> onnx.ModelProto:
    """`model` (structure; weights may stay external) with a fake quantization after each point,
    gated by MASK[i]; with MASK all zeros it computes what `model` computes."""
    graph = model.graph
    graph.input.append(helper.make_tensor_value_info(MASK, TensorProto.FLOAT, [len(where)]))
    inputs = {i.name for i in graph.input}
    added = []
    for i, point in enumerate(where):
        t, p = point.tensor, f"rkconvert_q{i}"
        if t in inputs:  # a graph input keeps its name: its readers take the quantized copy
            source, result = t, f"{p}_out"
            for node in graph.node:
                node.input[:] = [result if x == t else x for x in node.input]
        else:  # a node output keeps its name (outputs and readers unchanged): its maker writes a float copy
            source, result = f"{p}_float", t
            for node in graph.node:
                node.output[:] = [source if x == t else x for x in node.output]
        graph.initializer.extend([numpy_helper.from_array(np.array(point.scale, np.float32), f"{p}_scale"),
                                  numpy_helper.from_array(np.array(point.zero_point, np.int8), f"{p}_zp"),
                                  numpy_helper.from_array(np.array(i, np.int64), f"{p}_index")])
        added += [helper.make_node("QuantizeLinear", [source, f"{p}_scale", f"{p}_zp"], [f"{p}_int8"]),
                  helper.make_node("DequantizeLinear", [f"{p}_int8", f"{p}_scale", f"{p}_zp"], [f"{p}_deq"]),
                  helper.make_node("Sub", [f"{p}_deq", source], [f"{p}_error"]),
                  helper.make_node("Gather", [MASK, f"{p}_index"], [f"{p}_on"]),
                  helper.make_node("Mul", [f"{p}_error", f"{p}_on"], [f"{p}_added"]),
                  helper.make_node("Add", [source, f"{p}_added"], [result])]
    graph.node.extend(added)
    return _sorted(model)


def _sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """Nodes in an order ONNX Runtime accepts (each after what it reads)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, order = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(x in ready for x in node.input):
                order.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError(f"probe graph has a cycle or a missing input at {waiting[0].name!r}")
        pending = waiting
    del graph.node[:]
    graph.node.extend(order)
    return model


class Emulation:
    """An ONNX Runtime session of the probe graph of `onnx_path` and the float outputs of `feeds`, to
    measure any set of quantized points against."""

    def __init__(self, onnx_path: Path, where: list[Point], feeds: list[dict[str, np.ndarray]], scratch: Path):
        self.points = where
        model = onnx.load(str(onnx_path), load_external_data=False)
        probe = onnx_runtime.beside_weights(probe_model(model, where), onnx_path, scratch / "probe")
        self.session = onnx_runtime.session(probe)
        self.feeds = feeds
        self.reference = [self.outputs(f, np.zeros(len(where), np.float32)) for f in feeds]

    def outputs(self, feed: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
        """The graph's outputs for `feed`, flattened into one float64 vector, the points of `mask` quantized."""
        outputs = onnx_runtime.run(self.session, {**feed, MASK: mask})
        return np.concatenate([v.astype(np.float64).ravel() for v in outputs.values()])

    def noise(self, mask: np.ndarray) -> float:
        """Output noise power over output power, mean over the feeds, with the points of `mask` quantized."""
        total = 0.0
        for feed, ref in zip(self.feeds, self.reference):
            out = self.outputs(feed, mask)
            total += float(np.sum((out - ref) ** 2) / max(np.sum(ref ** 2), 1e-30))
        return total / len(self.feeds)

    def curve(self, feeds: list[dict[str, np.ndarray]], order: list[str], ks: list[int]) -> dict[int, float]:
        """k -> output PSNR over `feeds` (as the build's gate measures the simulator: compare() over the
        outputs of every feed) with every point quantized but the first k tensors of `order`."""
        nothing = np.zeros(len(self.points), np.float32)
        reference = np.concatenate([self.outputs(f, nothing) for f in feeds])
        curve = {}
        for k in ks:
            mask = self.mask(order[:k])
            curve[k] = compare(np.concatenate([self.outputs(f, mask) for f in feeds]), reference)["psnr_db"]
        return curve

    def mask(self, kept: list[str]) -> np.ndarray:
        """MASK with every point quantized but the tensors `kept` float."""
        left = set(kept)
        return np.array([0.0 if p.tensor in left else 1.0 for p in self.points], np.float32)

    def alone(self, tensors: list[str]) -> list[Sensitivity]:
        """Each of `tensors` (points' tensors) quantized alone, in their order."""
        index = {p.tensor: i for i, p in enumerate(self.points)}
        found = []
        for tensor in tensors:
            mask = np.zeros(len(self.points), np.float32)
            mask[index[tensor]] = 1.0
            found.append(Sensitivity(tensor, self.points[index[tensor]].names, self.noise(mask)))
        return found

    def ranking(self) -> list[Sensitivity]:
        """Every point quantized alone, most costly first."""
        return sorted(self.alone([p.tensor for p in self.points]), key=lambda s: -s.noise)


def emulate(onnx_path: Path, quantized: list[QuantizedTensor], calibration: list[dict[str, np.ndarray]],
            feeds: int, scratch: Path, on_step: Callable[[str], None] | None = None,
            proxy: bool = False) -> Emulation:
    """The emulation of `onnx_path` quantized as `quantized` says (its tensors matched on the `calibration`
    set; `proxy`: see points()), on `feeds` of its inputs spread over it."""
    graph = Graph.load(onnx_path)
    floats = float_tensors(graph.model)
    starts = {t for q in quantized if q.start for t in graph.downstream(q.start, MATCH_DEPTH)} & floats
    (on_step or (lambda _: None))(f"ranges of {len(starts)} tensors on {len(calibration)} calibration inputs")
    where = points(quantized, graph, observed_ranges(onnx_path, starts, calibration, scratch), proxy)
    return Emulation(onnx_path, where, spread(calibration, feeds), scratch)


def spread(calibration: list[dict[str, np.ndarray]], count: int) -> list[dict[str, np.ndarray]]:
    """`count` of the calibration inputs, spread over the set (the recorder writes it trajectory by
    trajectory, each from its noisiest step)."""
    chosen = np.linspace(0, len(calibration) - 1, min(count, len(calibration))).round().astype(int)
    return [calibration[i] for i in chosen]
