"""Make a structurally pruned diffusers UNet the way the seed project did: torch-pruning, Taylor importance.

    python tools/make_pruned_unet.py --model sd15:mini --ratio 0.25 --out pruned-unet/ [--pickle]

Writes a diffusers folder: the stock config.json (which no longer matches the weights, as in the wild)
and the pruned weights as diffusion_pytorch_model.safetensors; `--pickle` also writes the whole module
with torch.save (pruned.pth), the other form torch-pruning users share.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch_pruning as tp
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from converter.models.pruned_shapes import sync_width_attributes


def prune_unet(unet: UNet2DConditionModel, ratio: float, resolution: int, seed: int = 0) -> UNet2DConditionModel:
    """Prune `ratio` of the channels in place by first-order Taylor importance on one random batch."""
    g = torch.Generator().manual_seed(seed)
    latent = resolution // 8
    inputs = {
        "sample": torch.randn(1, unet.conv_in.in_channels, latent, latent, generator=g),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 77, unet.config.cross_attention_dim, generator=g),
    }

    def forward(model, example):
        return model(**example).sample

    # Attention projections keep whole heads; the in/out layers keep the latent and time interfaces.
    num_heads = {}
    for module in unet.modules():
        if isinstance(module, Attention):
            for proj in (module.to_q, module.to_k, module.to_v):
                num_heads[proj] = module.heads
    pruner = tp.pruner.MetaPruner(
        unet, example_inputs=inputs, forward_fn=forward, importance=tp.importance.TaylorImportance(),
        pruning_ratio=ratio, ignored_layers=[unet.conv_in, unet.conv_out, unet.time_embedding],
        num_heads=num_heads, prune_head_dims=True, prune_num_heads=False)
    forward(unet, inputs).abs().mean().backward()
    pruner.step()
    unet.zero_grad(set_to_none=True)
    sync_width_attributes(unet)
    return unet.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd15:mini", help="built-in model to prune")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pickle", action="store_true", help="also torch.save the whole module")
    args = parser.parse_args()

    from safetensors.torch import save_file

    from converter.models.unet_loading import load_preset

    unet = load_preset(args.model, args.seed)
    before = sum(p.numel() for p in unet.parameters())
    prune_unet(unet, args.ratio, args.resolution, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    unet.save_config(args.out)  # the unpruned config: widths are only in the weights now
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()},
              args.out / "diffusion_pytorch_model.safetensors")
    if args.pickle:
        torch.save(unet, args.out / "pruned.pth")
    after = sum(p.numel() for p in unet.parameters())
    print(f"{args.model}: {before:,} -> {after:,} parameters ({after / before:.1%}) in {args.out}")


if __name__ == "__main__":
    main()
