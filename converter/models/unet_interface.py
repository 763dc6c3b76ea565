"""The interface rkconvert expects of a UNet ONNX: diffusers' input names and static shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from converter.common.errors import UserError
from converter.common.onnx_files import static_shape
from converter.models.tracing import GUIDANCE_INPUT, INPUT_NAMES

RANKS = {"sample": 4, "encoder_hidden_states": 3, GUIDANCE_INPUT: 2}

InputSpecs = dict[str, tuple[list[int], np.dtype]]


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def specs_of(values: list[onnx.ValueInfoProto]) -> InputSpecs:
    return {v.name: (static_shape(v), onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
            for v in values}


def check_unet(model: onnx.ModelProto, path: Path, expected: tuple[str, ...] | None = None) -> InputSpecs:
    """Input specs of a UNet ONNX, or a one-line UserError saying why it is not one we can build. `expected`:
    the inputs a traced UNet must have kept (an ONNX file may have the guidance embedding or not)."""
    inputs = graph_inputs(model)
    names = [i.name for i in inputs]
    if expected and sorted(names) != sorted(expected):
        raise UserError(f"{path}: the traced UNet takes {', '.join(names)}, its config asks for "
                        f"{', '.join(expected)}: an input was dropped in tracing")
    if sorted(set(names) - {GUIDANCE_INPUT}) != sorted(INPUT_NAMES):
        raise UserError(f"{path}: not a UNet ONNX: expected inputs {', '.join(INPUT_NAMES)} "
                        f"(and {GUIDANCE_INPUT} for an LCM UNet); found {', '.join(names) or 'none'}")
    for value in inputs:
        shape = static_shape(value)
        if shape is None:
            raise UserError(f"{path}: input {value.name} has dynamic dimensions; export with static shapes")
        rank = RANKS.get(value.name)
        if rank and len(shape) != rank:
            raise UserError(f"{path}: input {value.name} has rank {len(shape)}, a UNet's has rank {rank}")
    outputs = model.graph.output
    if len(outputs) != 1 or len(outputs[0].type.tensor_type.shape.dim) != 4:
        raise UserError(f"{path}: not a UNet ONNX: expected one rank-4 output, found {len(outputs)} outputs")
    return specs_of(inputs)


def specs_to_json(specs: InputSpecs) -> dict:
    return {name: {"shape": shape, "dtype": np.dtype(dtype).name} for name, (shape, dtype) in specs.items()}


def specs_from_json(data: dict) -> InputSpecs:
    return {name: (v["shape"], np.dtype(v["dtype"])) for name, v in data.items()}
