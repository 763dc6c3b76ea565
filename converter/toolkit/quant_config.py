"""What a quantized build's `quantization.cfg` says (hybrid_quantization_step1's config, kept by every
quantized build in its `step1` folder): each tensor the toolkit quantizes to int8, with its scale, zero
point and the range it observed on the calibration set, and the ONNX tensor its name starts from
(converter/toolkit/naming.py). Entries that are weights (the toolkit lists the norms' scale and bias) or
kept in float (the graph inputs' own entries) are left out: what is read here are the activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converter.common.onnx_graph import Graph
from converter.toolkit.naming import named_tensor


@dataclass(frozen=True)
class QuantizedTensor:
    name: str  # the toolkit's tensor: what custom_quantize_layers names to keep it float16
    start: str | None  # the ONNX tensor its name starts from (its values may be a few nodes later)
    scale: float
    zero_point: int
    low: float  # the range the toolkit observed on the calibration set (ori_min, ori_max)
    high: float


def read(cfg: Path, graph: Graph) -> list[QuantizedTensor]:
    """The int8 activation tensors of `cfg`, in its order."""
    from ruamel.yaml import YAML

    weights = {i.name for i in graph.model.graph.initializer}
    found = []
    for name, p in YAML(typ="safe").load(cfg.read_text())["quantize_parameters"].items():
        if p.get("dtype") != "int8" or len(p.get("scale") or []) != 1 or name in weights:
            continue
        found.append(QuantizedTensor(name, named_tensor(name, graph), float(p["scale"][0]), int(p["zero_point"][0]),
                                     float(p["ori_min"][0]), float(p["ori_max"][0])))
    return found
