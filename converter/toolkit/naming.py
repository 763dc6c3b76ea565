"""How the toolkit names its tensors, and the ONNX tensor a name starts from.

The toolkit keeps ONNX names and appends a suffix per rewrite (`_mm`, `_rs`, `_tp`, `_sw`, `_norm`,
`_sdpa`, `#1`...), or names a tensor after the node making it (`norm1/LayerNormalization#1`). A suffixed
tensor often holds the result of *later* ONNX nodes (`Add_output_0_rs_norm` is the GroupNorm of that
Add; `Reshape_1_output_0_sw` the SiLU after it), so the name only says where to start looking: callers
match values among the tensors downstream of it (converter/common/onnx_graph.py `Graph.downstream`).
The fused attention (exSDPAttention) has two tensors of its own, the scores (`<MatMul_1>_2sdpa_q_matmul`)
and the softmax (`..._q_softmax`): they start from the `MatMul` and `Softmax` outputs of the same
attention module. A tile of an attention (`attn1/tile3/Softmax_output_0`, graph_passes/tile_attention.py)
starts, in a graph whose attention is left whole, from the tensor it is a tile of.
"""

from __future__ import annotations

import re

from converter.common.onnx_graph import Graph

_SUFFIX = re.compile(r"[_\-#][A-Za-z0-9]+$")
_ATTENTION_INTERNAL = re.compile(r"^(?P<scope>.*/)[^/]*sdpa_q_(?P<kind>softmax|matmul)$")
_ATTENTION_TENSOR = {"softmax": "Softmax_output_0", "matmul": "MatMul_output_0"}
_TILE = re.compile(r"(?:^|(?<=/))tile\d+/")


def named_tensor(layer_name: str, graph: Graph) -> str | None:
    """The ONNX tensor a toolkit tensor name was derived from (suffixes stripped one by one)."""
    found = _named(layer_name, graph)
    if found is None and _TILE.search(layer_name):
        return _named(_TILE.sub("", layer_name), graph)
    return found


def _named(layer_name: str, graph: Graph) -> str | None:
    internal = _ATTENTION_INTERNAL.match(layer_name)
    if internal:
        start = internal["scope"] + _ATTENTION_TENSOR[internal["kind"]]
        return start if start in graph.tensors else None
    name = layer_name
    while name:
        if name in graph.tensors:
            return name
        if name in graph.node_output:
            return graph.node_output[name]
        stripped = _SUFFIX.sub("", name)
        if stripped == name:
            return None
        name = stripped
    return None
