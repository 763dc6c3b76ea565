"""A UNet ONNX exported with dynamic axes, made static at a resolution.

This is the form of the UNets people download: diffusers' ONNX conversion script and optimum export with
batch 2 (classifier-free guidance), dynamic batch, channels, height, width and text length, and a timestep
per batch item. RKNN needs static shapes. rkconvert runs the UNet once per batch row, so it fixes batch 1,
the resolution's latent, CLIP's 77 tokens, and the channels the first convolution reads (the last one's for
the output). A dimension the file fixes to something else is refused, not overwritten.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from converter.common.errors import UserError
from converter.models.family import CONTEXT, SAMPLE, TEXT_TOKENS, VAE_SCALE
from graph_passes.simplify import Simplify


def is_dynamic(values: list[onnx.ValueInfoProto]) -> bool:
    return any(not d.HasField("dim_value") for v in values for d in v.type.tensor_type.shape.dim)


def fix(model: onnx.ModelProto, inputs: list[onnx.ValueInfoProto], path: Path, resolution: int | None) -> str:
    """Set the dynamic dimensions of `inputs` and the output in `model`; say what was set, in words."""
    if resolution is None:
        raise UserError(f"{path}: the UNet's inputs have dynamic dimensions; give --resolution to fix them "
                        f"(batch 1, {TEXT_TOKENS} text tokens)")
    latent = resolution // VAE_SCALE
    channels_in, channels_out = _conv_channels(model, path)
    wanted = {SAMPLE: [1, channels_in, latent, latent], CONTEXT: [1, TEXT_TOKENS, None]}
    fixed = []
    for value in inputs:
        rank = len(value.type.tensor_type.shape.dim)
        fixed.append(_set(value, wanted.get(value.name, [1] + [None] * (rank - 1)), path, resolution))
    for value in model.graph.output:
        fixed.append(_set(value, [1, channels_out, latent, latent], path, resolution))
    del model.graph.value_info[:]  # shapes inferred for the dynamic graph
    _fold_shapes(model, path)
    return "dynamic axes fixed: " + ", ".join(fixed)


def _fold_shapes(model: onnx.ModelProto, path: Path) -> None:
    """The shape arithmetic a dynamic export computes at run time (the timestep broadcast to the batch through
    Shape / Expand of `sample`, the attention's reshapes) folded to constants, in place, by the `simplify`
    pass (onnxsim): with it left in, host_time_projection finds no region of the timestep alone, and the toolkit dies on the flip."""
    simplified, report, _ = Simplify().run(model)
    if report.skipped:
        raise UserError(f"{path}: onnxsim could not fold the shapes of this dynamic export; export it static")
    model.CopyFrom(simplified)


def _set(value: onnx.ValueInfoProto, shape: list[int | None], path: Path, resolution: int) -> str:
    """`value`'s dynamic dimensions set to `shape` (None: the file must fix it); "name [dims]"."""
    dims = value.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise UserError(f"{path}: {value.name} has rank {len(dims)}, a UNet's has rank {len(shape)}")
    for dim, size in zip(dims, shape):
        if dim.HasField("dim_value"):
            if size is not None and dim.dim_value != size:
                raise UserError(f"{path}: {value.name} is exported with {dim.dim_value} where a build at "
                                f"{resolution} px needs {size}: re-export it with that dimension dynamic")
        elif size is None:
            raise UserError(f"{path}: {value.name} has a dynamic dimension rkconvert cannot infer: export it static")
        else:
            dim.Clear()
            dim.dim_value = size
    return f"{value.name} {[d.dim_value for d in dims]}"


def _conv_channels(model: onnx.ModelProto, path: Path) -> tuple[int, int]:
    """The input channels of the first Conv (conv_in) and the output channels of the last (conv_out), from
    their weights."""
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    convs = [weights[n.input[1]] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in weights]
    if not convs:
        raise UserError(f"{path}: dynamic dimensions, and no convolution weights to read the channels from")
    return convs[0][1], convs[-1][0]
