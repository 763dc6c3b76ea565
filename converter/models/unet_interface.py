"""The interface rkconvert expects of a UNet ONNX: diffusers' input names and static shapes; what any other
ONNX graph (a VAE decoder, a text encoder, one block that reproduces a toolkit bug) must have to be built:
static shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from converter.common.errors import UserError
from converter.common.onnx_files import static_shape
from converter.models import dynamic_unet
from converter.models.family import CONTEXT, CORE, EXTRAS, RANKS, SAMPLE, TIMESTEP

# A UNet exported from the original LDM code (openaimodel.py's forward(x, timesteps, context)).
LDM_NAMES = {"x": SAMPLE, "timesteps": TIMESTEP, "context": CONTEXT}
UNET, GRAPH = "unet", "graph"  # what a graph is: the UNet-only steps (time projection, image check) or none

InputSpecs = dict[str, tuple[list[int], np.dtype]]


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def specs_of(values: list[onnx.ValueInfoProto]) -> InputSpecs:
    return {v.name: (static_shape(v), onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
            for v in values}


def check_unet(model: onnx.ModelProto, path: Path, expected: tuple[str, ...] | None = None) -> InputSpecs:
    """Input specs of a UNet ONNX (its input names checked by the caller: classify, or `expected`), or a one-line
    UserError saying why it is not one we can build. `expected`: the inputs a traced UNet must have kept (an ONNX
    file may have the guidance embedding or not)."""
    inputs = graph_inputs(model)
    names = [i.name for i in inputs]
    if expected and sorted(names) != sorted(expected):
        raise UserError(f"{path}: the traced UNet takes {', '.join(names)}, its config asks for "
                        f"{', '.join(expected)}: an input was dropped in tracing")
    for value, shape in zip(inputs, static_shapes(inputs, path)):
        rank = RANKS.get(value.name)
        if rank and len(shape) != rank:
            raise UserError(f"{path}: input {value.name} has rank {len(shape)}, a UNet's has rank {rank}")
    outputs = model.graph.output
    if len(outputs) != 1 or len(outputs[0].type.tensor_type.shape.dim) != 4:
        raise UserError(f"{path}: not a UNet ONNX: expected one rank-4 output, found {len(outputs)} outputs")
    return specs_of(inputs)


def classify(model: onnx.ModelProto, path: Path, resolution: int | None = None) -> tuple[str, InputSpecs, str | None]:
    """(UNET or GRAPH, input specs, what was fixed) of a user's ONNX; in `model`, an LDM-named UNet's inputs are
    renamed to diffusers' names, and a UNet exported with dynamic axes is made static at `resolution`
    (dynamic_unet.py; what was fixed, in words). Any other graph needs static input shapes (one-line UserError
    otherwise)."""
    names = {i.name for i in graph_inputs(model)}
    if names - set(EXTRAS) == set(LDM_NAMES):
        _rename_inputs(model, LDM_NAMES)
        names = {LDM_NAMES.get(n, n) for n in names}
    if names - set(EXTRAS) == set(CORE):
        fixed = dynamic_unet.fix(model, graph_inputs(model), path, resolution) \
            if dynamic_unet.is_dynamic([*graph_inputs(model), *model.graph.output]) else None
        return UNET, check_unet(model, path), fixed
    static_shapes(graph_inputs(model), path)
    return GRAPH, specs_of(graph_inputs(model)), None


def static_shapes(inputs: list[onnx.ValueInfoProto], path: Path) -> list[list[int]]:
    """Each input's shape, or a one-line UserError naming the first with a dynamic dimension."""
    shapes = [static_shape(value) for value in inputs]
    for value, shape in zip(inputs, shapes):
        if shape is None:
            raise UserError(f"{path}: input {value.name} has dynamic dimensions; export with static shapes")
    return shapes


def _rename_inputs(model: onnx.ModelProto, names: dict[str, str]) -> None:
    for value in model.graph.input:
        value.name = names.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]


RESHAPING = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Identity"}  # ids pass through unchanged


def index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """For each graph input that indexes a table (a text encoder's token ids into its embedding, through
    reshapes), the table's length along the indexed axis: check inputs drawn below it are valid ids."""
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    bounds: dict[str, int] = {}
    for value in graph_inputs(model):
        frontier = [value.name]
        while frontier:
            tensor = frontier.pop()
            for node in readers.get(tensor, []):
                if node.op_type in RESHAPING and node.input[0] == tensor:
                    frontier.extend(node.output)
                elif node.op_type == "Gather" and node.input[1:2] == [tensor] and node.input[0] in dims:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    length = dims[node.input[0]][axis]
                    bounds[value.name] = min(bounds.get(value.name, length), length)
    return bounds


def specs_to_json(specs: InputSpecs) -> dict:
    return {name: {"shape": shape, "dtype": np.dtype(dtype).name} for name, (shape, dtype) in specs.items()}


def specs_from_json(data: dict) -> InputSpecs:
    return {name: (v["shape"], np.dtype(v["dtype"])) for name, v in data.items()}
