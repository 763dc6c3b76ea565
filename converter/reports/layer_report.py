"""Per-layer comparison of the .rknn with ONNX Runtime: which layer lets the error in.

Each layer the toolkit's simulator dumps becomes one row, matched to the ONNX tensor that holds the
same values. The toolkit keeps ONNX names and appends a suffix per rewrite (`_mm`, `_rs`, `_tp`,
`_sw`, `_norm`, `_sdpa`, `#1`...), but a suffixed tensor often holds the result of *later* ONNX nodes
(`Add_output_0_rs_norm` is the GroupNorm of that Add; `MatMul_output_0_mm_tp_sw` includes the bias
Add), so the name only says where to start looking. Candidates are the named tensor and the tensors
a few nodes downstream of it with as many values; the one (and the element order) under which the
toolkit's own float 'golden' run agrees best with ONNX Runtime wins, if that agreement is close
(cosine >= MATCH_COS). Where the toolkit computes something else than ONNX Runtime (a faulty rewrite, a
broken layer), values cannot match; the row then falls back to the named tensor, in the element order
the toolkit used for tensors named alike (`mapping: by-name`). Rows carry:

- `cosine`, `psnr_db`, `sqnr_db`, `max_abs`, `mean_abs`, `rel_error`: the simulator against ONNX
  Runtime, errors accumulated from the inputs ("entire");
- `single_cos`, `single_euc`: the toolkit's own single-layer figures (layer fed its golden input);
- `golden_cosine`: the toolkit's float run against ONNX Runtime; low values mean one of its graph
  rewrites changed what the model computes, which its own analysis cannot see;
- `scale`: set when the toolkit's tensor is the ONNX tensor times a constant it folded in (the
  attention scale moved onto k, for one); the metrics then compare against the scaled reference;
- `added_noise_db`: noise power this layer adds relative to its signal, 10*log10 of (its relative
  noise power minus the largest of its inputs'): the first layer that goes wrong stands out, while
  the layers after it, which only carry its error along, do not;
- `onnx_nodes`: the ONNX nodes between the previous matched tensors and this one, i.e. what the
  toolkit's layer (and any layer it did not dump) covers; `module`: the diffusers module path.

A layer with no such match is listed with `mapping: unmapped`, the toolkit's figures and the reason.
So are the partial sums of a convolution the toolkit splits along its input channels
(`Conv_output_0_tile3_conv_add`: tiles 0..3 summed; the complete sum keeps the convolution's own
name): no ONNX tensor holds them, and the later ones resemble the whole convolution closely enough
(cosine 0.9 and up, SD 1.5 up_blocks' conv1) to pass for it while looking broken.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from converter.common import onnx_runtime
from converter.common.accuracy import compare
from converter.common.onnx_graph import Graph
from converter.toolkit.naming import named_tensor
from converter.toolkit.snapshot import SnapshotLayer, load_dump, read_layers

_PARTIAL_SUM = re.compile(r"_tile\d+_conv")
MATCH_COS = 0.9
SCALE_TOLERANCE = 1e-3
SEARCH_DEPTH = 8  # nodes downstream of the named tensor to look for the dumped values


def module_path(node_name: str) -> str:
    """`/down_blocks.1/attentions.0/proj_in/Conv` -> `down_blocks.1.attentions.0.proj_in`."""
    parts = [p for p in node_name.split("/") if p]
    return ".".join(parts[:-1]) if len(parts) > 1 else ""


def _orders(value: np.ndarray):
    """(name, flat values) for the element orders a dump may use: ONNX's own, then axis permutations
    that keep the batch axis first (NHWC, transposed matrices, heads moved...)."""
    yield "onnx", value.ravel()
    for perm in itertools.permutations(range(1, value.ndim)):
        perm = (0, *perm)
        if perm != tuple(range(value.ndim)) and value.ndim <= 4:
            yield "perm" + "".join(map(str, perm)), value.transpose(perm).ravel()


def _match(golden: np.ndarray, candidates: list[str], values: dict[str, np.ndarray]):
    """(tensor, order, flat reference, golden cosine) agreeing best with the golden dump."""
    best = None
    for tensor in candidates:
        value = values.get(tensor)
        if value is None or value.size != golden.size or not np.issubdtype(value.dtype, np.floating):
            continue
        for order, ref in _orders(value):
            cos = compare(golden, ref)["cosine"]
            if best is None or cos > best[3]:
                best = (tensor, order, ref, cos)
    return best


def _row(layer: SnapshotLayer) -> dict:
    return {"index": layer.index, "layer": layer.name, "op": layer.op, "onnx_tensor": None, "module": "",
            "onnx_nodes": [], "mapping": "unmapped", "layout": None, "scale": None, "toolkit_entire_cos": layer.entire_cos,
            "single_cos": layer.single_cos, "single_euc": layer.single_euc}


def _suffix(layer_name: str, tensor: str) -> str:
    return layer_name[len(tensor):] if layer_name.startswith(tensor) else "?"


def analyse(snapshot: Path, onnx_path: Path, feed: dict[str, np.ndarray], scratch: Path) -> list[dict]:
    """One row per dumped layer, in the toolkit's execution order."""
    layers = read_layers(snapshot)
    graph = Graph.load(onnx_path)
    values = {**feed, **onnx_runtime.run_with_tensors(onnx_path, feed, list(graph.producer), scratch)}
    starts = {layer.name: named_tensor(layer.name, graph) for layer in layers}
    partial_sums = {layer.name for layer in layers if _PARTIAL_SUM.search(layer.name)}
    matches = {}
    for layer in layers:
        start = starts[layer.name]
        if start is None or layer.name in partial_sums:
            matches[layer.name] = None
            continue
        golden = load_dump(snapshot, "golden", layer)
        matches[layer.name] = _match(golden, graph.downstream(start, SEARCH_DEPTH), values)

    # Where the toolkit's float run disagrees with ONNX Runtime (a rewrite or a layer that computes
    # something else), values cannot find the tensor; fall back to the name, in the element order
    # the toolkit used for tensors named alike (same suffix, same rank) that did match.
    conventions: dict[tuple[str, int], Counter] = {}
    for layer in layers:
        best, start = matches[layer.name], starts[layer.name]
        if best is not None and best[3] >= MATCH_COS and best[0] == start:
            key = (_suffix(layer.name, start), values[start].ndim)
            conventions.setdefault(key, Counter())[best[1]] += 1

    rows = []
    for layer in layers:
        row = _row(layer)
        rows.append(row)
        if layer.name in partial_sums:
            row["why_unmapped"] = "partial sum of a convolution the toolkit split into tiles"
            continue
        best, start = matches[layer.name], starts[layer.name]
        simulator = load_dump(snapshot, "simulator", layer)
        if best is not None and best[3] >= MATCH_COS:
            tensor, order, ref, _ = best
            _fill(row, graph, tensor, order, ref, load_dump(snapshot, "golden", layer), simulator,
                  "exact" if tensor == layer.name else "matched")
            continue
        value = values.get(start) if start else None
        convention = conventions.get((_suffix(layer.name, start), value.ndim)) if value is not None else None
        if convention and value.size == simulator.size:
            order = convention.most_common(1)[0][0]
            ref = dict(_orders(value))[order]
            _fill(row, graph, start, order, ref, load_dump(snapshot, "golden", layer), simulator, "by-name")
            continue
        row["why_unmapped"] = ("no ONNX tensor of this name" if start is None else
                               f"no tensor near {start} holds these {simulator.size} values" if best is None else
                               f"closest is {best[0]} (golden cosine {best[3]:.3f})")
    _attribute_noise(rows, graph)
    return rows


def _fill(row: dict, graph: Graph, tensor: str, order: str, ref: np.ndarray, golden: np.ndarray,
          simulator: np.ndarray, mapping: str) -> None:
    # A constant the toolkit folded in (e.g. the attention scale moved onto k) leaves the cosine at 1
    # but every value scaled: compare against the scaled reference and say so.
    scale = None
    if mapping != "by-name":
        fit = float(golden.astype(np.float64) @ ref / max(float(ref.astype(np.float64) @ ref), 1e-30))
        if abs(fit - 1) > SCALE_TOLERANCE:
            scale, ref = fit, ref * np.float32(fit)
    producer = graph.producer.get(tensor)
    row.update(onnx_tensor=tensor, mapping=mapping, layout=order, scale=scale,
               module=module_path(producer.name) if producer is not None else tensor,
               golden_cosine=compare(golden, ref)["cosine"], **compare(simulator, ref))


def _relative_noise(row: dict) -> float:
    return 10 ** (-row["sqnr_db"] / 10) if np.isfinite(row["sqnr_db"]) else (0.0 if row["sqnr_db"] > 0 else 1.0)


def _attribute_noise(rows: list[dict], graph: Graph) -> None:
    """Fill `added_noise_db` and `onnx_nodes` by walking the ONNX graph in order."""
    by_tensor: dict[str, list[dict]] = {}
    for row in rows:
        if row["onnx_tensor"]:
            by_tensor.setdefault(row["onnx_tensor"], []).append(row)
    noise = {name: 0.0 for name in graph.inputs}  # relative noise power reaching each tensor
    pending: dict[str, list[str]] = {name: [] for name in graph.inputs}  # unmatched nodes upstream
    for node in graph.model.graph.node:
        upstream = max((noise.get(i, 0.0) for i in node.input), default=0.0)
        covered = list(dict.fromkeys(n for i in node.input for n in pending.get(i, []))) + [node.name]
        for out in node.output:
            matched = by_tensor.get(out)
            if not matched:
                noise[out], pending[out] = upstream, covered
                continue
            own = max(_relative_noise(r) for r in matched)
            for r in matched:
                added = _relative_noise(r) - upstream
                r["added_noise_db"] = float(10 * np.log10(added)) if added > 0 else None
                r["onnx_nodes"] = covered
            noise[out], pending[out] = own, []


def worst_first(rows: list[dict]) -> list[dict]:
    """Rows that let error in first: highest added noise, then lowest cosine; unmapped last."""
    def key(r):
        added = r.get("added_noise_db")
        return (r["mapping"] == "unmapped", -(added if added is not None else -1e9), r.get("cosine", 1.0))

    return sorted(rows, key=key)


# The toolkit's float run of a layer it converted faithfully agrees with ONNX Runtime to cosine
# 0.99999+; below this, the row's error is not quantization noise: float16 cannot help it.
GOLDEN_FAITHFUL_COS = 0.99


def first_below(rows: list[dict], min_cos: float) -> dict | None:
    """The earliest layer (execution order) whose cosine against ONNX Runtime is under `min_cos`."""
    return next((r for r in rows if r["mapping"] != "unmapped" and r["cosine"] < min_cos), None)


# The dumps are text, "%.6f" a line: about 10 bytes a value, for the golden and the simulator run.
DUMP_BYTES_PER_VALUE = 2 * 10


def estimated_dump_bytes(onnx_path: Path) -> int:
    """Disk the toolkit's per-layer dumps of this graph would take (from ONNX shape inference)."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model)
    values = 0
    for info in inferred.graph.value_info:
        tensor = info.type.tensor_type
        if tensor.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            values += int(np.prod([d.dim_value for d in tensor.shape.dim]))
    return values * DUMP_BYTES_PER_VALUE
