"""Diffusers and transformers folders saved with `variant="fp16"` hold only `<weights>.fp16.<ext>` (many published
repositories ship so): their loaders find no weights unless told the variant."""

from __future__ import annotations

from pathlib import Path

FP16 = "fp16"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def variant(folder: Path) -> str | None:
    """"fp16" when `folder` holds the fp16 variant's weights and no plain ones; else None."""
    names = [p.name for p in folder.glob("*") if p.suffix in WEIGHT_SUFFIXES]
    return FP16 if names and all(f".{FP16}." in name for name in names) else None


def fp16_only(folders: list[Path]) -> list[Path]:
    """Those of `folders` that hold only the fp16 variant's weights."""
    return [f for f in folders if f.is_dir() and variant(f) == FP16]
