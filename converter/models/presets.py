"""Built-in UNet architectures with seeded random weights: nothing is downloaded.

Each preset is the diffusers `UNet2DConditionModel` config of a model the seed projects deploy.
`<name>:mini` keeps the block structure (block types, layers per block, heads, projections, mid-block)
and shrinks widths by 8, so the same operators appear in a model that converts in seconds.
"""

from __future__ import annotations

from converter.common.errors import UserError

_SD15 = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

PRESETS: dict[str, dict] = {
    "sd15": _SD15,
    # SD 2.1-base / SD-Turbo: OpenCLIP-H text states, 5/10/20/20 heads of 64, linear proj_in/out.
    "sd21": {
        **_SD15,
        "cross_attention_dim": 1024,
        "attention_head_dim": [5, 10, 20, 20],
        "use_linear_projection": True,
    },
    # BK-SDM-Tiny (Nota AI): one resnet+attention per down stage, no mid-block.
    "bk-sdm-tiny": {**_SD15, "layers_per_block": 1, "mid_block_type": None},
}

MINI_SUFFIX = ":mini"
DEMO = "demo"  # not a preset: the trained model in converter/models/demo/, named here with the presets


def miniature(config: dict) -> dict:
    """Same architecture, widths / 8 (head counts kept, so every stage keeps whole heads)."""
    return {
        **config,
        "block_out_channels": [c // 8 for c in config["block_out_channels"]],
        "cross_attention_dim": config["cross_attention_dim"] // 16,
        "norm_num_groups": 8,
    }


def names() -> list[str]:
    return [DEMO] + [n for base in PRESETS for n in (base, base + MINI_SUFFIX)]


def preset_config(name: str) -> dict:
    """The diffusers config for a preset name (`sd15`, `sd15:mini`, ...)."""
    base, mini, _ = name.partition(MINI_SUFFIX)
    if base not in PRESETS or (mini and _):
        raise UserError(f"unknown built-in model '{name}' (known: {', '.join(names())})")
    config = PRESETS[base]
    return dict(miniature(config) if mini else config)
