"""Option groups shared by rkconvert's subcommands (after Polygraphy's argument groups)."""

from __future__ import annotations

from pathlib import Path

import click

from converter.models import presets


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
                 help="RKNN target_platform to build for: rk3588, rk3576, rk3562."),
    click.option("--resolution", type=int, default=None,
                 help="Image size in pixels (latent = size/8), static in the graph. "
                      "Default: the model's own (sample_size x 8: 512 for the SD presets, 128 for demo)."),
    click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
                 help="Build folder (default: build/<model>-<target>/). Stages found there with unchanged "
                      "inputs are reused, by `build` and `lint` alike."),
)

pass_options = _compose(
    click.option("--passes", "passes", default=None, metavar="A,B,...",
                 help="Run exactly these graph passes, in this order, instead of the target's list."),
    click.option("--enable-pass", "enable_passes", multiple=True, metavar="PASS",
                 help="Turn on a pass the target lists but leaves off by default (rk3588: simplify). Repeatable."),
    click.option("--skip-pass", "skip_passes", multiple=True, metavar="PASS",
                 help="Leave out a pass (repeatable), e.g. to reproduce a toolkit failure."),
    click.option("--attention-tiles", "attention_tiles", default="auto", show_default=True, metavar="auto|off|N",
                 help="Split each attention along its queries into tiles (pass tile_attention; exact). auto: per "
                      "attention, the count with the least modelled DRAM traffic on the target (1 where its scores "
                      "fit on chip); on rk3576 and rk3562 instead the toolkit's own flash attention, which shrinks "
                      "float16 attention more; N: N tiles everywhere; off: leave attention whole."),
)

calib_options = _compose(
    click.option("--schedule", default="sd15-20step", show_default=True, metavar="NAME",
                 help="Sampler the UNet is deployed with: sd15-20step (DDIM, CFG 7.5), sd15-20step-euler, "
                      "turbo-4step (Euler ancestral, no CFG), lcm-2step, lcm-4step."),
    click.option("--samples", type=click.IntRange(1), default=32, show_default=True,
                 help="UNet inputs to keep (with CFG each step gives an uncond and a cond input)."),
    click.option("--trajectories", type=click.IntRange(1), default=4, show_default=True,
                 help="Prompts to run the sampler on (each a full denoising run on the host)."),
    click.option("--weighting", type=click.Choice(["schedule", "uniform"]), default="schedule", show_default=True,
                 help="How steps are sampled: uniform, or by how much noise (log sigma) each step removes."),
    click.option("--prompts", "prompts_path", type=click.Path(path_type=Path, dir_okay=False, exists=True),
                 default=None, help="Prompt file (one per line, optionally 'category<TAB>prompt'); "
                                    "default: the built-in 60 prompts in 10 categories."),
    click.option("--text-encoder", "text_encoder_path", type=click.Path(path_type=Path, file_okay=False, exists=True),
                 default=None, help="CLIP tokenizer + text encoder folder (a diffusers pipeline folder works); "
                                    "default: a tiny seeded CLIP, whose states are not the real model's."),
)


def as_arguments(params: dict, command: click.Command) -> list[str]:
    """The options of `command` that `params` (another subcommand's parsed values) set away from their
    defaults, as arguments: how one subcommand names the run of another on the same model and target."""
    ctx = click.Context(command)
    args = []
    for option in command.params:
        if not isinstance(option, click.Option) or option.name not in params:
            continue
        value, default, flag = params[option.name], option.get_default(ctx), option.opts[-1]
        if option.is_flag:
            if bool(value) != bool(default):
                args.append(flag if value else option.secondary_opts[0])
        elif value is not None and value != default and not (option.multiple and not value):
            args += [a for v in (value if option.multiple else [value]) for a in (flag, str(v))]
    return args
