"""Trace a diffusers UNet to a static-shape ONNX graph (batch 1, opset 17, TorchScript exporter).

The TorchScript exporter is used rather than torch.export/dynamo: its graphs are what rknn-toolkit2
2.5.0 was measured on (`../shared/rknn-facts.md`), and it keeps diffusers module paths in node names
(`/down_blocks.0/attentions.0/...`), which every report uses to point back into the model.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch

from converter.common import onnx_files
from converter.models.family import CORE, Signature

OPSET = 17
OUTPUT_NAME = "out_sample"


def trace(unet, resolution: int, path: Path) -> list[Path]:
    """Export `unet` at `resolution` pixels, with the inputs of its family, to `path`; return the files written."""
    signature = Signature.of_config(unet.config, resolution)
    inputs = signature.example_inputs()
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings for every Python-level shape check in diffusers
        raw = Path(tmp) / "raw.onnx"
        # Keywords, not a wrapper module: node names keep diffusers' module paths. A trace drops what is not
        # passed (an LCM UNet's cond_proj), and flattens added_cond_kwargs after the keywords of their own.
        torch.onnx.export(unet, tuple(inputs[name] for name in CORE), str(raw),
                          kwargs={**signature.call_keywords(inputs), "return_dict": False},
                          input_names=list(signature.names), output_names=[OUTPUT_NAME], opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)
        # Past 2 GB torch writes a file per weight: streamed into one, never all in memory beside the UNet.
        return onnx_files.save(onnx_files.load_lazy(raw), path)
