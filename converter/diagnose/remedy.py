"""The build a catalogue remedy asks for: what `diagnose` prints as the fix and `--apply` runs."""

from __future__ import annotations

from dataclasses import replace

from converter.builds.request import BuildRequest


def remedied(req: BuildRequest, remedy: dict) -> BuildRequest:
    """`req` with `remedy` applied: its pass run, or its first dtype."""
    if "dtypes" in remedy:
        return replace(req, dtype=remedy["dtypes"][0])
    name, choice, chip = remedy["pass"], req.passes, req.chip
    if choice.explicit is not None:
        listed = [n.strip() for n in choice.explicit.split(",") if n.strip()]
        return replace(req, passes=replace(choice, explicit=",".join(_inserted(listed, name, chip.passes))))
    enable = choice.enable + (name,) if name in chip.off_by_default and name not in choice.enable else choice.enable
    return replace(req, passes=replace(choice, skip=tuple(n for n in choice.skip if n != name), enable=enable))


def _inserted(listed: list[str], name: str, order: tuple[str, ...]) -> list[str]:
    """`name` added to an explicit pass list where the target's own `order` puts it (passes depend on
    the ones before them: host_time_projection comes first, tile_attention last)."""
    if name in listed:
        return listed
    rank = {n: i for i, n in enumerate(order)}
    after = next((i for i, n in enumerate(listed) if rank.get(n, len(rank)) > rank.get(name, len(rank))), len(listed))
    return listed[:after] + [name] + listed[after:]
