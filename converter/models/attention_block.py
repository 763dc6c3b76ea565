"""One diffusers `Attention` traced alone, as the UNet exports it: the unit tiling is measured on."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from diffusers.models.attention_processor import Attention

from converter.models.family import TEXT_TOKENS
from converter.models.tracing import OPSET


def trace_attention(path: Path, tokens: int, dim: int, heads: int,
                    context: int | None = None) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Self-attention over `tokens` (or cross-attention to 77 `context`-wide tokens) with seeded weights,
    written to `path`; returns the model and a seeded feed for it (inputs "x" and "context")."""
    torch.manual_seed(0)
    attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, cross_attention_dim=context).eval()
    args = (torch.randn(1, tokens, dim),) + ((torch.randn(1, TEXT_TOKENS, context),) if context else ())
    names = ["x", "context"][:len(args)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(attn, args, str(path), input_names=names, output_names=["y"], opset_version=OPSET,
                          dynamo=False)
    return onnx.load(str(path)), {n: a.numpy() for n, a in zip(names, args)}
