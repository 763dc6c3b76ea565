"""An analytic model of the DRAM traffic of attention, and the tile count it favours: an estimate from
tensor shapes and the chip's SRAM, never a measurement.

Why a model: rknn-toolkit2 2.5.0 fuses each attention into one `exSDPAttention` layer and its cycle
estimate gives that layer 0 cycles, tiled or not. Measured on one diffusers `Attention` at SD 1.5's
first-block shape (4096 tokens, 8 heads x 40, rk3588, float16; tools/bench_tiling.py --blocks): 1, 2, 4,
8, 16 or 32 query tiles all estimate 3,276,800 cycles (only the projections count; Split and Concat get
0 too), while the memory map's total internal memory goes 184, 97, 53, 32, 21, 15 MB. So the cycles
cannot choose a tile count; the memory map shows the scores shrinking; this model says what the bytes
moved would be.

The model: the NPU runs a layer head by head. A head's score block (its queries x keys, float16) stays
on chip when it fits in half the NPU-usable SRAM (the other half streaming q, k, v in and the output
out); else the scores go to DRAM after QKᵀ, come back for the softmax, go out again and come back for
xV: 4 x the scores' bytes. Q, K, V and the output cross once per layer, so N query tiles read K and V
N times. Left out: caches, DDR efficiency, the runtime's scheduling, and whether the runtime uses the
SRAM at all (it is opt-in on the board).

What the model leaves out, the compiler shows: its memory map keeps a scratch buffer per fused attention
for all heads' scores of the tile (2.9 MB at 70 tiles of the 4096-token attention, where the model has
each head's 0.47 MB on chip), and its total internal memory stops shrinking well before the model's count
while the toolkit's build() time grows with the square of the tiles (one 4096-token self-attention, 8 x
40, rk3588 float16, tools/bench_tiling.py --blocks, this machine: 8 / 16 / 24 / 32 / 48 / 70 tiles give
31.6 / 21.4 / 19.6 / 15.1 / 15.5 / 13.5 MB internal memory and 7.5 / 7.5 / 8.0 / 9.5 / 15.5 / 41.0 s of
toolkit). `tile_cap` bounds the count where the map flattens: the toolkit's build() of SD 1.5 at 512 px
in 2 parts took 96 + 105 s with 172 attention layers against 143 + 185 s with the model's 402, at the
same PSNR (README, "Attention tiling").
"""

from __future__ import annotations

FLOAT16 = 2
MAX_TILES = 128  # beyond this the layer count, not the traffic, dominates what a board would see


def layer_traffic(heads: int, head_dim: int, queries: int, keys: int, sram_bytes: int) -> dict:
    """DRAM bytes one attention layer moves, and whether its scores stay on chip."""
    scores = heads * queries * keys * FLOAT16
    fits = queries * keys * FLOAT16 <= sram_bytes // 2
    q_and_out = 2 * heads * queries * head_dim * FLOAT16
    k_and_v = 2 * heads * keys * head_dim * FLOAT16
    return {"scores_bytes": scores, "scores_fit_on_chip": fits,
            "dram_bytes": q_and_out + k_and_v + (0 if fits else 4 * scores)}


def tiled_traffic(heads: int, head_dim: int, queries: int, keys: int, tiles: int, sram_bytes: int) -> int:
    """DRAM bytes of the attention split into `tiles` near-equal query tiles (as graph_passes/tile_attention)."""
    base, extra = divmod(queries, tiles)
    lengths = [base + 1] * extra + [base] * (tiles - extra)
    return sum(layer_traffic(heads, head_dim, n, keys, sram_bytes)["dram_bytes"] for n in lengths if n)


def tile_cap(queries: int, keys: int, head_dim: int) -> int:
    """The most query tiles worth building: enough that a tile's scores (queries x keys a head) are no
    larger than the layer's q, k, v and output (4 x queries x head_dim a head); past that the compiler's
    memory map stops shrinking (see above). SD 1.5 at 512 px: 26 for its 4096-token self-attentions."""
    longest = max(1, 4 * queries * head_dim // keys)
    return -(-queries // longest)


def best_tiles(queries: int, keys: int, heads: int, head_dim: int, sram_bytes: int) -> int:
    """The query-tile count with the least modelled traffic (the fewest tiles among equals); 1 when no
    tiling beats the whole layer, e.g. on a chip whose SRAM is not known (0)."""
    candidates = range(1, min(queries, MAX_TILES) + 1)
    return min(candidates, key=lambda n: (tiled_traffic(heads, head_dim, queries, keys, n, sram_bytes), n))
