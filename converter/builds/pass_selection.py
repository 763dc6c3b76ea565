"""Which graph passes a build runs: the target's ordered list, adjusted by the user's flags."""

from __future__ import annotations

from converter.common.errors import UserError
from targets.chip import Chip

TILE_ATTENTION = "tile_attention"


def _known(names: list[str], flag: str) -> None:
    from graph_passes import CATALOGUE

    for name in names:
        if name not in CATALOGUE:
            raise UserError(f"{flag} {name}: no such pass (known: {', '.join(CATALOGUE)})")


def check_attention_tiles(value: str) -> str:
    """`--attention-tiles`: "auto", "off" or a tile count >= 1 (UserError otherwise)."""
    if value in ("auto", "off") or (value.isdigit() and int(value) >= 1):
        return value
    raise UserError(f"--attention-tiles {value}: expected auto, off or a tile count (1, 2, ...)")


def select(chip: Chip, explicit: str | None = None, enable: tuple[str, ...] = (), skip: tuple[str, ...] = (),
           attention_tiles: str = "auto") -> list[str]:
    """`explicit` ("a,b,c") replaces the target's list; else its default list plus `enable`, minus `skip`.
    `attention_tiles` "off" leaves tile_attention out."""
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
    off = (TILE_ATTENTION,) if check_attention_tiles(attention_tiles) == "off" else ()
    return [n for n in names if n not in skip and n not in off]


def toolkit_attention(chip: Chip, dtype: str, attention_tiles: str = "auto") -> dict:
    """Keywords for the toolkit's config(): under `auto`, its own flash attention on the chips where it
    shrinks attention's buffers more than tiling does (targets/rk3576.py), for float16 activations."""
    if check_attention_tiles(attention_tiles) == "auto" and chip.flash_attention and dtype != "w8a8":
        return {"enable_flash_attention": True}
    return {}


def instances(names: list[str], chip: Chip, attention_tiles: str = "auto") -> list:
    """The passes to run, in order: the catalogue's, with tile_attention set to `attention_tiles`
    (auto: per attention, the count with the least modelled DRAM traffic on `chip`, at most the count past
    which the compiler's memory map stops shrinking)."""
    from graph_passes import CATALOGUE
    from graph_passes.tile_attention import TileAttention
    from targets.attention_traffic import best_tiles, tile_cap

    tiles = check_attention_tiles(attention_tiles)
    if tiles == "auto":
        tiling = TileAttention(lambda queries, keys, heads, head_dim: min(
            best_tiles(queries, keys, heads, head_dim, chip.sram_bytes), tile_cap(queries, keys, head_dim)))
    else:
        tiling = TileAttention(1 if tiles == "off" else int(tiles))
    return [tiling if n == TILE_ATTENTION else CATALOGUE[n] for n in names]
