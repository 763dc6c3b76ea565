"""What a single-file checkpoint in the original (CompVis / LDM) layout holds, read from its key names and
shapes alone: which Stable Diffusion family, and the diffusers configs of its UNet, VAE and text encoder.

Nothing comes from a hub. Widths, depths, channel counts and layer counts are read from the weights; what
weights cannot tell comes from the LDM code, which fixes it for every SD 1.x / 2.x model: 32 norm groups,
SD 1.x's 8 heads per attention and SD 2.x's 64 channels per head, the VAE's 0.18215 latent scale.
A structurally pruned UNet gets its level widths here; the layers' own widths are fitted on load
(pruned_shapes.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from converter.common.errors import UserError

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_TEXT = "cond_stage_model.transformer.text_model."
SD2_TEXT = "cond_stage_model.model."
FAMILIES = {"sd1": "SD 1.x (CLIP ViT-L text encoder)", "sd2": "SD 2.x (OpenCLIP ViT-H text encoder)"}
SUPPORTED = "SD 1.x and SD 2.x text-to-image checkpoints (UNet, VAE and text encoder in one file)"
VAE_SCALE = 0.18215
NORM_GROUPS = 32
SD1_HEADS, SD2_HEAD_CHANNELS = 8, 64


def family(shapes: dict[str, tuple], path: Path) -> str:
    """'sd1' or 'sd2'; anything else is refused in one line naming what the keys show."""
    keys = shapes.keys()
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has("conditioner.embedders."):
        found = "an SDXL checkpoint (conditioner.embedders.*)"
    elif any("lora_down" in k or k.startswith(("lora_unet_", "lora_te")) for k in keys):
        found = "LoRA weights only (lora_down/lora_up), not a whole model: give it to --lora beside the model"
    elif not has(UNET) and (has("encoder.down.") or has("decoder.up.")):
        found = "a VAE only (encoder.* / decoder.*)"
    elif not has(UNET):
        found = "no UNet under model.diffusion_model.*"
    elif not has(VAE) or not (has(SD1_TEXT) or has(SD2_TEXT)):
        missing = [name for name, ok in (("the VAE (first_stage_model.*)", has(VAE)),
                                         ("the text encoder (cond_stage_model.*)", has(SD1_TEXT) or has(SD2_TEXT)))
                   if not ok]
        found = f"a UNet without {' and '.join(missing)}"
    elif shapes.get(UNET + "input_blocks.0.0.weight", (0, 4))[1] != 4:
        found = f"a UNet taking {shapes[UNET + 'input_blocks.0.0.weight'][1]} input channels (inpainting or upscaling)"
    else:
        return "sd2" if has(SD2_TEXT) else "sd1"
    raise UserError(f"{path}: {found}; rkconvert reads {SUPPORTED}")


def _indices(shapes: dict[str, tuple], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in shapes if (m := re.match(pattern, k))})


def unet_config(shapes: dict[str, tuple], family_: str) -> dict:
    """The UNet2DConditionModel config (diffusers naming), levels read from the LDM block list."""
    s = {k[len(UNET):]: v for k, v in shapes.items() if k.startswith(UNET)}
    inputs = _indices(s, r"input_blocks\.(\d+)\.")
    first_down = next((i for i in inputs if f"input_blocks.{i}.0.op.weight" in s), len(inputs))
    per_level = first_down  # each level: its resnets, then a downsampler (the last level has none)
    layers = per_level - 1
    levels = len(inputs) // per_level
    firsts = [1 + level * per_level for level in range(levels)]
    widths = [s[f"input_blocks.{i}.0.out_layers.3.weight"][0] for i in firsts]
    attended = [f"input_blocks.{i}.1.proj_in.weight" in s for i in firsts]
    up_attended = [f"output_blocks.{level * per_level}.1.proj_in.weight" in s for level in range(levels)]
    attention = next(i for i, a in zip(firsts, attended) if a)
    proj_in = s[f"input_blocks.{attention}.1.proj_in.weight"]
    heads = SD1_HEADS if family_ == "sd1" else [max(1, w // SD2_HEAD_CHANNELS) for w in widths]
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": 64,
        "in_channels": s["input_blocks.0.0.weight"][1],
        "out_channels": s["out.2.weight"][0],
        "layers_per_block": layers,
        "block_out_channels": widths,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attended],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attended],
        "mid_block_type": ("UNetMidBlock2DCrossAttn" if "middle_block.1.proj_in.weight" in s else None),
        "cross_attention_dim": s[f"input_blocks.{attention}.1.transformer_blocks.0.attn2.to_k.weight"][1],
        "transformer_layers_per_block": len(_indices(s, rf"input_blocks\.{attention}\.1\.transformer_blocks\.(\d+)\.")),
        "attention_head_dim": heads,
        "use_linear_projection": len(proj_in) == 2,
        "norm_num_groups": NORM_GROUPS,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }


def vae_config(shapes: dict[str, tuple]) -> dict:
    s = {k[len(VAE):]: v for k, v in shapes.items() if k.startswith(VAE)}
    levels = _indices(s, r"encoder\.down\.(\d+)\.")
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": s["encoder.conv_in.weight"][1],
        "out_channels": s["decoder.conv_out.weight"][0],
        "latent_channels": s["decoder.conv_in.weight"][1],
        "block_out_channels": [s[f"encoder.down.{i}.block.0.conv2.weight"][0] for i in levels],
        "layers_per_block": len(_indices(s, r"encoder\.down\.0\.block\.(\d+)\.")),
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "norm_num_groups": NORM_GROUPS,
        "scaling_factor": VAE_SCALE,
    }


def text_config(shapes: dict[str, tuple], family_: str) -> dict:
    """CLIPTextConfig fields. SD 2.x conditions on OpenCLIP's penultimate layer (then its final norm), so its
    text encoder is the file's transformer without the last block."""
    if family_ == "sd1":
        s = {k[len(SD1_TEXT):]: v for k, v in shapes.items() if k.startswith(SD1_TEXT)}
        vocab, hidden = s["embeddings.token_embedding.weight"]
        positions = s["embeddings.position_embedding.weight"][0]
        layers = len(_indices(s, r"encoder\.layers\.(\d+)\."))
        intermediate = s["encoder.layers.0.mlp.fc1.weight"][0]
        act, projection = "quick_gelu", hidden
    else:
        s = {k[len(SD2_TEXT):]: v for k, v in shapes.items() if k.startswith(SD2_TEXT)}
        vocab, hidden = s["token_embedding.weight"]
        positions = s["positional_embedding"][0]
        layers = len(_indices(s, r"transformer\.resblocks\.(\d+)\.")) - 1
        intermediate = s["transformer.resblocks.0.mlp.c_fc.weight"][0]
        act, projection = "gelu", s.get("text_projection", (hidden, hidden))[1]
    return {"vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": max(1, hidden // 64),
            "max_position_embeddings": positions, "hidden_act": act, "projection_dim": projection,
            "bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": 1 if family_ == "sd1" else 0}
