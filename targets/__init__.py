"""Target chips as data: cores, SRAM, the dtypes and passes each builds, operator facts (the toolkit
itself is driven by converter/toolkit/)."""

from __future__ import annotations

from converter.common.errors import UserError

from . import rk3562, rk3576, rk3588
from .chip import Chip

CHIPS: dict[str, Chip] = {c.name: c for c in (rk3588.CHIP, rk3576.CHIP, rk3562.CHIP)}


def get_chip(name: str) -> Chip:
    try:
        return CHIPS[name]
    except KeyError:
        raise UserError(f"unknown target '{name}' (known: {', '.join(CHIPS)})") from None
