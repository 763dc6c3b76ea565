"""Write a Stable Diffusion pipeline as a single-file checkpoint in the original (CompVis / LDM) layout, the
form people download (`v1-5-pruned-emaonly.safetensors`), from diffusers parts with seeded weights:

    python tools/make_single_file.py --model sd15 --out sd15.safetensors [--half]

SD 1.5 (`sd15`: CLIP ViT-L text encoder) or SD 2.1 (`sd21`: OpenCLIP ViT-H, whose file holds one block more than
SD conditions on) at full size, or the tests' tiny ones. The diffusers -> LDM renaming here is written from the
LDM code's module tree (openaimodel.py's input/middle/output blocks, the autoencoder's down/mid/up, OpenCLIP's
resblocks with fused in_proj), independently of diffusers' LDM -> diffusers conversion that rkconvert uses, so a
test comparing the two catches a wrong map.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

VOCAB = 49408  # CLIP's BPE: the tokenizer rkconvert writes must index this table

# The families' own conventions at tiny widths: 32 norm groups (fixed in LDM), SD 1.x's 8 heads, SD 2.x's
# 64-channel heads and linear projections, text states 64 wide (one 64-channel text head).
UNET = {
    "sd1": {"block_out_channels": [32, 64], "attention_head_dim": 8, "use_linear_projection": False},
    "sd2": {"block_out_channels": [64, 128], "attention_head_dim": [1, 2], "use_linear_projection": True},
}
TEXT_WIDTH = 64


def tiny_parts(family: str, seed: int = 0, **unet_overrides):
    """(unet, vae, text encoder) of the real classes with seeded weights."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        cross_attention_dim=TEXT_WIDTH, norm_num_groups=32, **{**UNET[family], **unet_overrides}).eval()
    vae = AutoencoderKL(block_out_channels=[32, 64, 64, 64], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=32,
                        layers_per_block=1).eval()  # SD's 4 levels: latents 1/8 of the image
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=2,
        num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu" if family == "sd1" else "gelu",
        bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1)).eval()
    for p in [*unet.parameters(), *vae.parameters(), *text.parameters()]:  # no zero-initialised layer hides a swap
        torch.nn.init.normal_(p, std=0.05 if p.ndim > 1 else 0.5)
    return unet, vae, text


def _resnet(key: str) -> str:
    for new, old in (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                     ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")):
        key = key.replace(new, old)
    return key


def unet_to_ldm(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    per = unet.config.layers_per_block + 1  # LDM blocks per level (down: resnets + downsampler; up: resnets)
    ldm = {}
    for key, value in unet.state_dict().items():
        p = key.split(".")
        if p[0] == "time_embedding":
            new = f"time_embed.{0 if p[1] == 'linear_1' else 2}.{p[2]}"
        elif p[0] in ("conv_in", "conv_norm_out", "conv_out"):
            new = {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}[p[0]] + "." + p[1]
        elif p[0] == "down_blocks":
            level, kind, j, rest = int(p[1]), p[2], int(p[3]), ".".join(p[4:])
            if kind == "downsamplers":
                new = f"input_blocks.{(level + 1) * per}.0.op.{p[-1]}"
            else:
                new = f"input_blocks.{level * per + j + 1}.{0 if kind == 'resnets' else 1}.{rest}"
        elif p[0] == "mid_block":
            kind, j, rest = p[1], int(p[2]), ".".join(p[3:])
            new = f"middle_block.{2 * j if kind == 'resnets' else 1}.{rest}"
        elif p[0] == "up_blocks":
            level, kind, j, rest = int(p[1]), p[2], int(p[3]), ".".join(p[4:])
            if kind == "upsamplers":
                attended = hasattr(unet.up_blocks[level], "attentions")
                new = f"output_blocks.{level * per + per - 1}.{2 if attended else 1}.{rest}"
            else:
                new = f"output_blocks.{level * per + j}.{0 if kind == 'resnets' else 1}.{rest}"
        else:
            raise AssertionError(key)
        ldm["model.diffusion_model." + (_resnet(new) if ".resnets." in key else new)] = value
    return ldm


def vae_to_ldm(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    ldm = {}
    for key, value in vae.state_dict().items():
        p = key.split(".")
        new = key.replace("conv_norm_out", "norm_out")
        if "down_blocks" in key:
            new = key.replace(f"down_blocks.{p[2]}.resnets", f"down.{p[2]}.block")
            new = new.replace(f"down_blocks.{p[2]}.downsamplers.0", f"down.{p[2]}.downsample")
        elif "up_blocks" in key:
            ldm_level = levels - 1 - int(p[2])
            new = key.replace(f"up_blocks.{p[2]}.resnets", f"up.{ldm_level}.block")
            new = new.replace(f"up_blocks.{p[2]}.upsamplers.0", f"up.{ldm_level}.upsample")
        elif "mid_block.resnets" in key:
            new = key.replace(f"mid_block.resnets.{p[3]}", f"mid.block_{int(p[3]) + 1}")
        elif "mid_block.attentions" in key:
            new = key.replace("mid_block.attentions.0", "mid.attn_1")
            for d, o in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
                new = new.replace(f".{d}.", f".{o}.")
            if value.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        ldm["first_stage_model." + new.replace("conv_shortcut", "nin_shortcut")] = value
    return ldm


def text_to_ldm(text: CLIPTextModel, family: str) -> dict[str, torch.Tensor]:
    # the files name CLIP's tensors as transformers 4 did (text_model.*); transformers 5 dropped the prefix
    sd = {("" if k.startswith("text_model.") else "text_model.") + k: v
          for k, v in text.state_dict().items() if not k.endswith("position_ids")}
    if family == "sd1":
        return {"cond_stage_model.transformer." + k: v for k, v in sd.items()}
    prefix, ldm = "cond_stage_model.model.", {}
    layers = text.config.num_hidden_layers
    ldm[prefix + "token_embedding.weight"] = sd.pop("text_model.embeddings.token_embedding.weight")
    ldm[prefix + "positional_embedding"] = sd.pop("text_model.embeddings.position_embedding.weight")
    ldm[prefix + "ln_final.weight"] = sd.pop("text_model.final_layer_norm.weight")
    ldm[prefix + "ln_final.bias"] = sd.pop("text_model.final_layer_norm.bias")
    for i in range(layers + 1):  # OpenCLIP's last block: SD 2.x conditions on the one before it
        src = f"text_model.encoder.layers.{min(i, layers - 1)}."
        dst = f"{prefix}transformer.resblocks.{i}."
        noise = (lambda t: t + 1.0) if i == layers else (lambda t: t)  # the unused block differs from any used one
        for kind in ("weight", "bias"):
            ldm[dst + f"attn.in_proj_{kind}"] = noise(torch.cat([sd[src + f"self_attn.{q}_proj.{kind}"]
                                                                for q in ("q", "k", "v")]))
            for d, o in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                         ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                ldm[dst + f"{o}.{kind}"] = noise(sd[src + f"{d}.{kind}"])
    ldm[prefix + "text_projection"] = torch.randn(text.config.hidden_size, text.config.hidden_size)
    ldm[prefix + "logit_scale"] = torch.tensor(4.6)
    return ldm


def write(path: Path, family: str, seed: int = 0, half: bool = False, parts=None, ema_unet=None):
    """Write the single file (of `parts`, or tiny seeded ones); returns the (unet, vae, text encoder) it holds.
    `ema_unet`: kept beside the UNet as its EMA weights, as v1-5-pruned keeps them (model_ema.<key without the
    dots after model.>)."""
    unet, vae, text = parts or tiny_parts(family, seed)
    tensors = {**unet_to_ldm(unet), **vae_to_ldm(vae), **text_to_ldm(text, family)}
    if ema_unet is not None:
        tensors.update({"model_ema." + "".join(k.split(".")[1:]): v for k, v in unet_to_ldm(ema_unet).items()})
    save_file({k: (v.half() if half else v).contiguous() for k, v in tensors.items()}, path)
    return unet, vae, text


def full_parts(model: str, seed: int = 0):
    """(unet, vae, text encoder) at SD 1.5's or SD 2.1's size (the preset UNet, SD's VAE, the family's text
    encoder), seeded."""
    from converter.models.unet_loading import load_preset

    unet = load_preset(model, seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2).eval()
    sd1 = model == "sd15"
    width = 768 if sd1 else 1024
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=12 if sd1 else 23,
        num_attention_heads=width // 64, max_position_embeddings=77, hidden_act="quick_gelu" if sd1 else "gelu",
        bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1)).eval()
    return unet, vae, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["sd15", "sd21"], default="sd15")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--half", action="store_true", help="store float16, as most downloads do")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    write(args.out, "sd1" if args.model == "sd15" else "sd2", half=args.half, parts=full_parts(args.model, args.seed))
    print(f"{args.out}: {args.out.stat().st_size / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
