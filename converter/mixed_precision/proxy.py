"""Sensitivity at full size from a proxy: the model at a smaller resolution says how much the network
amplifies each tensor's int8 error, one pass at the build's resolution says how large that error is.

Gradients of SD 1.5 at 512 px would hold every activation of a 4096-token UNet (tens of GB); at 128 px
they fit (4.1 GB at 64 px). But the proxy's own ranking does not carry over: the build's int8 scales do
not fit the proxy's activations (a softmax over 256 keys peaks higher than over 4096, and the build's
scale clips it), so the proxy misjudges how large each error is and ranks clipped tensors first. What
carries over is the gain: the output noise a tensor's error causes over that error's own power, both at
the proxy (stage sensitivity's noise, gradients and the verified first ones). The error's power at the
build's resolution comes from one forward pass there, with the build's scales, no gradients, every
tensor let go after its last reader (TorchGraph.stream). A tensor's cost is gain x power.

Measured on the demo built at 256 px, ranked at 64 px (tools/bench_proxy.py; emulated output PSNR at 256 px
with the first k left float, k = 8 / 32 / 64 / 128): gain x power 35.8 / 38.0 / 42.1 / 47.3 dB, this stage
at 256 px itself 36.3 / 39.3 / 43.2 / 47.6. In an experiment on the same build, the proxy's own order gave
32.6 / 37.0 / 41.1 / 46.0 and the error's power alone 32.6 / 32.8 / 32.9 / 33.7.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from converter.common.onnx_graph import Graph
from converter.common.onnx_torch import TorchGraph
from converter.mixed_precision.gradient import int8_error
from converter.mixed_precision.sensitivity import FUSED, Point, Sensitivity, grouped
from converter.toolkit.quant_config import QuantizedTensor


def build_points(quantized: list[QuantizedTensor], graph: Graph, proxy_points: list[Point]) -> list[Point]:
    """The tensors of the build's `graph` that the toolkit names matched at the proxy hold: the tensor a name
    starts from (in a tiled attention, the tile's own), or for a FUSED name the proxy's, by name."""
    proxy_of = {name: p.tensor for p in proxy_points for name in p.names}
    by_tensor: dict[str, list[QuantizedTensor]] = {}
    for q in quantized:
        if q.name not in proxy_of:
            continue
        fused = q.name.endswith(FUSED) and proxy_of[q.name] in graph.tensors
        by_tensor.setdefault(proxy_of[q.name] if fused else q.start, []).append(q)
    return grouped(by_tensor)


def error_power(onnx_path: Path, where: list[Point], feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Each point's int8 error power (its scale and zero point applied to the tensor's value) over the
    output's power, mean over `feeds`: one streaming forward pass each."""
    graph = TorchGraph.load(onnx_path)
    points = {p.tensor: p for p in where}
    power = dict.fromkeys(points, 0.0)
    for feed in feeds:
        errors: dict[str, float] = {}

        def visit(name: str, value: torch.Tensor) -> None:
            errors[name] = float((int8_error(value, points[name]).double() ** 2).sum())

        outputs = graph.stream({k: torch.from_numpy(v) for k, v in feed.items()}, set(points), visit)
        total = sum(float((o.double() ** 2).sum()) for o in outputs)
        for name, error in errors.items():
            power[name] += error / max(total, 1e-30) / len(feeds)
    return power


def carried(proxy_ranked: list[Sensitivity], proxy_power: dict[str, float], where: list[Point],
            power: dict[str, float]) -> list[Sensitivity]:
    """The build's points `where`, costliest first: the gain at the proxy of the tensor their names hold
    there (the most of them, for the tiles of one attention) times their error `power` at the build's
    resolution. A tensor without error at the proxy has no gain to carry: it goes last."""
    gain = {s.tensor: s.noise / proxy_power[s.tensor] if proxy_power.get(s.tensor) else 0.0 for s in proxy_ranked}
    gain_of = {name: gain[s.tensor] for s in proxy_ranked for name in s.names}
    found = [Sensitivity(p.tensor, p.names, max(gain_of[n] for n in p.names) * power.get(p.tensor, 0.0))
             for p in where]
    return sorted(found, key=lambda s: -s.noise)
