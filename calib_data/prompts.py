"""Prompt sets for calibration: the built-in one (10 categories x 6, prompts.tsv) or a user's file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converter.common.errors import UserError

BUILTIN = Path(__file__).with_name("prompts.tsv")


@dataclass(frozen=True)
class Prompt:
    category: str
    text: str


def load_prompts(path: Path | None = None) -> list[Prompt]:
    """Lines of `category<TAB>prompt` or just `prompt`; blank lines and `#` comments are skipped."""
    source = path or BUILTIN
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--prompts {source}: cannot read it ({e})") from None
    prompts = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        category, _, text = line.partition("\t") if "\t" in line else ("", "", line)
        prompts.append(Prompt(category.strip() or "user", text.strip()))
    if not prompts:
        raise UserError(f"--prompts {source}: no prompts in it")
    return prompts
