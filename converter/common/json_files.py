"""Files written whole or not at all (a temp name, then renamed), and JSON with no Infinity in it."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def write_text(path: Path, text: str) -> None:
    """`text` into `path` under a temp name, then renamed: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.rename(path)


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(finite(data), indent=2) + "\n")


def finite(value):
    """JSON has no Infinity: a bit-exact comparison reports its dB figures as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
