"""Which graph passes a build runs: the target's ordered list, adjusted by the user's flags."""

from __future__ import annotations

from converter.common.errors import UserError
from targets.chip import Chip


def _known(names: list[str], flag: str) -> None:
    from graph_passes import CATALOGUE

    for name in names:
        if name not in CATALOGUE:
            raise UserError(f"{flag} {name}: no such pass (known: {', '.join(CATALOGUE)})")


def select(chip: Chip, explicit: str | None = None, enable: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> list[str]:
    """`explicit` ("a,b,c") replaces the target's list; else its default list plus `enable`, minus `skip`."""
    if explicit is not None:
        names = [n.strip() for n in explicit.split(",") if n.strip()]
        _known(names, "--passes")
    else:
        _known(list(enable), "--enable-pass")
        extra = [n for n in enable if n not in chip.passes]
        if extra:
            raise UserError(f"--enable-pass {extra[0]}: not in {chip.name}'s pass list ({', '.join(chip.passes)}); "
                            "use --passes to give a list of your own")
        names = [n for n in chip.passes if n not in chip.off_by_default or n in enable]
    _known(list(skip), "--skip-pass")
    return [n for n in names if n not in skip]
