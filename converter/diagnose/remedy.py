"""The build options a catalogue remedy changes: what `diagnose` prints as the fix and `--apply` runs."""

from __future__ import annotations

from targets.chip import Chip


def remedied(params: dict, remedy: dict, chip: Chip) -> dict:
    """`params` (the build's parsed options) with `remedy` applied: its pass run, or its first dtype."""
    fixed = dict(params)
    if "dtypes" in remedy:
        fixed["dtype"] = remedy["dtypes"][0]
        return fixed
    name = remedy["pass"]
    if fixed.get("passes") is not None:
        fixed["passes"] = ",".join(_inserted([n.strip() for n in fixed["passes"].split(",") if n.strip()], name, chip))
        return fixed
    fixed["skip_passes"] = tuple(n for n in fixed.get("skip_passes", ()) if n != name)
    if name in chip.off_by_default and name not in fixed.get("enable_passes", ()):
        fixed["enable_passes"] = (*fixed.get("enable_passes", ()), name)
    return fixed


def _inserted(listed: list[str], name: str, chip: Chip) -> list[str]:
    """`name` added to an explicit pass list where the target's own order puts it (passes depend on
    the ones before them: host_time_projection comes first, tile_attention last)."""
    if name in listed:
        return listed
    rank = {n: i for i, n in enumerate(chip.passes)}
    after = next((i for i, n in enumerate(listed) if rank.get(n, len(rank)) > rank.get(name, len(rank))), len(listed))
    return listed[:after] + [name] + listed[after:]
