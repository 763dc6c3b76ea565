"""The pass list a build runs: the target's order, the user's adjustments, clear refusals."""

from __future__ import annotations

import pytest

from converter.builds.pass_selection import instances, select, toolkit_attention
from converter.common.errors import UserError
from targets import get_chip
from targets.attention_traffic import best_tiles, tile_cap

RK3588 = get_chip("rk3588")
DEFAULT = ["host_time_projection", "drop_unit_slice_steps", "split_fused_qkv_projection", "group_norm_as_conv",
           "einsum_as_matmul", "attention_key_as_gemm", "tile_attention"]


def test_default_list_leaves_simplify_off_and_keeps_the_order():
    assert select(RK3588) == DEFAULT
    assert select(RK3588, enable=("simplify",)) == [*DEFAULT[:2], "simplify", *DEFAULT[2:]]
    assert select(RK3588, skip=("host_time_projection",)) == DEFAULT[1:]
    assert select(RK3588, explicit="simplify, host_time_projection") == ["simplify", "host_time_projection"]
    assert select(RK3588, attention_tiles="off") == DEFAULT[:-1]


@pytest.mark.parametrize("kwargs, message", [
    ({"skip": ("nope",)}, "--skip-pass nope: no such pass"),
    ({"enable": ("nope",)}, "--enable-pass nope: no such pass"),
    ({"explicit": "simplify,nope"}, "--passes nope: no such pass"),
    ({"attention_tiles": "0"}, "--attention-tiles 0: expected auto, off or a tile count"),
    ({"attention_tiles": "many"}, "--attention-tiles many: expected"),
])
def test_unknown_passes_are_refused(kwargs, message):
    with pytest.raises(UserError, match=message):
        select(RK3588, **kwargs)


def test_attention_tiles_configures_the_tiling_pass():
    """auto asks the traffic model with the chip's SRAM, within the cap; N is N everywhere."""
    auto = instances(DEFAULT, RK3588)[-1].policy
    assert auto(4096, 4096, 8, 40) > 1  # SD 1.5's first self-attention at 512²: its scores spill
    # ... and the model's count (70) is past where the memory map flattens: the cap decides
    assert auto(4096, 4096, 8, 40) == tile_cap(4096, 4096, 40) < best_tiles(4096, 4096, 8, 40, RK3588.sram_bytes)
    assert auto(1024, 1024, 8, 40) == best_tiles(1024, 1024, 8, 40, RK3588.sram_bytes) <= tile_cap(1024, 1024, 40)
    assert auto(256, 256, 8, 40) == 1  # the demo's: they fit on chip
    assert auto(4096, 4096, 8, 40) != instances(DEFAULT, get_chip("rk3576"))[-1].policy(4096, 4096, 8, 40)
    assert instances(DEFAULT, RK3588, "3")[-1].policy(4096, 4096, 8, 40) == 3
    assert [p.name for p in instances(DEFAULT, RK3588, "2")] == DEFAULT


def test_auto_uses_the_toolkits_flash_attention_where_it_wins():
    rk3576, rk3562 = get_chip("rk3576"), get_chip("rk3562")
    flash = {"enable_flash_attention": True}
    assert toolkit_attention(rk3576, "float16") == toolkit_attention(rk3562, "float16") == flash
    assert toolkit_attention(rk3576, "w4a16") == flash  # float16 activations
    assert toolkit_attention(rk3576, "w8a8") == {}  # int8 activations: the flag changes nothing
    assert toolkit_attention(rk3576, "float16", "4") == toolkit_attention(rk3576, "float16", "off") == {}
    assert toolkit_attention(RK3588, "float16") == {}  # accepted there, but its memory map does not move


@pytest.mark.parametrize("queries, keys, head_dim", [(4096, 4096, 40), (1024, 1024, 80), (4096, 77, 40), (300, 1000, 16)])
def test_the_cap_is_the_fewest_tiles_whose_scores_are_no_larger_than_the_layers_activations(queries, keys, head_dim):
    """A tile's scores (longest tile x keys) within q, k, v and output (4 x queries x head_dim), a head."""
    cap, activations = tile_cap(queries, keys, head_dim), 4 * queries * head_dim
    longest = lambda tiles: -(-queries // tiles)
    assert longest(cap) * keys <= activations or longest(cap) == 1
    assert cap == 1 or longest(cap - 1) * keys > activations
