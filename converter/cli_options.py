"""Option groups shared by rkconvert's subcommands (after Polygraphy's argument groups)."""

from __future__ import annotations

from pathlib import Path

import click

from . import presets


def _compose(*decorators):
    def apply(fn):
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


model_options = _compose(
    click.option("--model", "model_spec", required=True, metavar="MODEL",
                 help="A built-in model (" + ", ".join(presets.names()) + "; presets carry seeded random "
                      "weights), a diffusers UNet folder (config.json + diffusion_pytorch_model.safetensors), "
                      "a weights file (.safetensors / .pt / .pth / .bin state dict, pruned or not), "
                      "or a UNet .onnx (inputs sample, timestep, encoder_hidden_states)."),
    click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
                 help="UNet config.json for a bare weights file (default: config.json beside it)."),
    click.option("--trust-pickle", is_flag=True,
                 help="Allow a .pt/.pth that pickles a whole module (torch-pruning's torch.save(model)). "
                      "Unpickling runs code from the file: only for files you trust."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed for preset weights and check inputs."),
)

target_options = _compose(
    click.option("--target", required=True, metavar="CHIP",
                 help="RKNN target_platform to build for (rk3588)."),
)

pass_options = _compose(
    click.option("--passes", "passes", default=None, metavar="A,B,...",
                 help="Run exactly these graph passes, in this order, instead of the target's list."),
    click.option("--enable-pass", "enable_passes", multiple=True, metavar="PASS",
                 help="Turn on a pass the target lists but leaves off by default (rk3588: simplify). Repeatable."),
    click.option("--skip-pass", "skip_passes", multiple=True, metavar="PASS",
                 help="Leave out a pass (repeatable), e.g. to reproduce a toolkit failure."),
)
