"""The option groups of rkconvert's commands, each turning its options into fields of a BuildRequest (and
back: cli/options.py). A command names the groups it takes; an option is declared here once."""

from __future__ import annotations

from pathlib import Path

import click

from converter.cli.options import Group
from converter.models import presets
from converter.models.family import PIPELINE_MODELS as NPU_MODEL_CHOICES
from converter.builds.request import (CHECK_INPUT_CHOICES, IMAGE_CHECK_CHOICES, LAYER_REPORT_CHOICES, CalibSettings,
                                        Checks, Gates, HybridSettings, PassChoice, default_out)
from converter.toolkit.job import QUANT_ALGORITHMS


def _model(values: dict) -> dict:
    from converter.models.model_source import resolve

    from converter.models.lora import Lora
    from converter.models.vae_swap import Vae

    loras = tuple(Lora.parse(spec) for spec in values["lora_specs"])
    vae = Vae.parse(values["vae_path"]) if values["vae_path"] else None
    return {"source": resolve(values["model_spec"], values["config_path"], values["trust_pickle"], values["seed"],
                              loras, vae, values["prediction_type"], values["ema"]), "seed": values["seed"]}


MODEL = Group((
    click.option("--model", "model_spec", required=True, metavar="MODEL",
                 help="A built-in model (" + ", ".join(presets.names()) + "; presets carry seeded random "
                      "weights), a diffusers UNet folder (config.json + diffusion_pytorch_model.safetensors), "
                      "a weights file (.safetensors / .pt / .pth / .bin state dict, pruned or not), "
                      "a single-file SD 1.x / 2.x checkpoint (.safetensors, or .ckpt: tensors read without running its pickle; "
                      "read once into a pipeline folder under $RKCONVERT_CACHE, default ~/.cache/rkconvert), "
                      "or an .onnx: a UNet (inputs sample, timestep, encoder_hidden_states, or LDM's x, timesteps, "
                      "context) or any other static-shape graph (a VAE decoder, a text encoder, a block that "
                      "reproduces a toolkit bug: built float16, checked on inputs drawn from its shapes)."),
    click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
                 help="UNet config.json for a bare weights file (default: config.json beside it)."),
    click.option("--trust-pickle", is_flag=True,
                 help="Allow a .pt/.pth that pickles a whole module (torch-pruning's torch.save(model)), or a "
                      ".ckpt whose pickle holds more than tensors and plain values. Unpickling runs code from the "
                      "file: only for files you trust."),
    click.option("--lora", "lora_specs", multiple=True, metavar="FILE[:SCALE]",
                 help="A LoRA fused into the model's UNet (and text encoder, where it has one) before export, at "
                      "SCALE (default 1); repeat for several. Diffusers, PEFT and kohya / A1111 files. The fused "
                      "pipeline is written once under $RKCONVERT_CACHE."),
    click.option("--vae", "vae_path", default=None, metavar="PATH",
                 help="A VAE in place of the pipeline's own: a diffusers folder (AutoencoderKL, or AutoencoderTiny: "
                      "TAESD) or a VAE-only .safetensors in the LDM layout. Its decoder is built, checked and shipped "
                      "as the pipeline's would be."),
    click.option("--prediction-type", type=click.Choice(["epsilon", "v_prediction"]), default=None,
                 help="What the pipeline's UNet predicts, where its files cannot say: a single file is read as "
                      "epsilon-predicting; SD 2.x's 768-px models (and their fine-tunes) predict v. Set in the "
                      "scheduler config the samplers, calibration and image check read (default: the pipeline's "
                      "own)."),
    click.option("--ema/--no-ema", default=True, show_default=True,
                 help="A single file holding its UNet's EMA weights beside the trained ones (model_ema.*, as SD 1.5's "
                      "v1-5-pruned does): build the EMA ones (what people draw with), or the trained ones."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed for preset weights, check inputs and calibration."),
), _model, lambda req: {"model_spec": req.source.spec, "config_path": req.source.config_path,
                        "trust_pickle": req.source.trust_pickle, "seed": req.seed,
                        "lora_specs": tuple(lora.spec for lora in req.source.loras),
                        "vae_path": str(req.source.vae.path) if req.source.vae else None,
                        "prediction_type": req.source.prediction_type, "ema": req.source.ema})


def _target(values: dict) -> dict:
    from targets import get_chip

    return {"chip": get_chip(values["target"])}


TARGET = Group((
    click.option("--target", required=True, metavar="CHIP",
                 help="RKNN target_platform to build for: rk3588, rk3576, rk3562."),
), _target, lambda req: {"target": req.chip.name})

RESOLUTION = Group((
    click.option("--resolution", type=int, default=None,
                 help="Image size in pixels (latent = size/8), static in the graph. "
                      "Default: the model's own (sample_size x 8: 512 for the SD presets, 128 for demo)."),
), lambda values: {"resolution": values["resolution"]}, lambda req: {"resolution": req.resolution})



class Sizes(click.ParamType):
    """--resolution of `build`: one size, or several (comma-separated), each a build of its own."""

    name = "PX[,PX...]"

    def convert(self, value, param, ctx) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        parts = [v.strip() for v in str(value).split(",")]
        if not all(v.isdigit() and int(v) > 0 for v in parts) or len(set(parts)) != len(parts):
            self.fail(f"{value!r}: a size in pixels, or several different ones separated by commas "
                      "(256,384,512)", param, ctx)
        return tuple(int(v) for v in parts)


RESOLUTIONS = Group((
    click.option("--resolution", type=Sizes(), default=None,
                 help="Image size in pixels (latent = size/8), static in the graph. Several sizes (256,384,512): a "
                      "build of each in --out/<size>px/ (a .rknn has one static shape: RKNN's dynamic shapes are "
                      "reported broken for diffusion UNets), indexed by --out/report.json; `release` makes one "
                      "bundle of them, whose runner picks one with --size. Default: the model's own (sample_size x "
                      "8: 512 for the SD presets, 128 for demo)."),
), lambda values: {"resolution": values["resolution"][0] if values["resolution"] and len(values["resolution"]) == 1
                   else None,
                   "resolutions": values["resolution"] if values["resolution"] and len(values["resolution"]) > 1
                   else ()},
    lambda req: {"resolution": ",".join(map(str, req.resolutions)) if req.resolutions else req.resolution})


OUTPUT = Group((
    click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
                 help="Build folder (default: build/<model>-<target>/). Stages found there with unchanged "
                      "inputs are reused, by every command that runs them."),
    click.option("--rebuild", is_flag=True, help="Ignore stages kept from earlier runs."),
), lambda values: {"out": values["out"], "rebuild": values["rebuild"]},
    lambda req: {"out": None if req.out == default_out(req.source, req.chip) else req.out, "rebuild": req.rebuild})


class PartsCount(click.ParamType):
    """--parts: None for auto, else a count from 1 to 8."""

    name = "auto|N"

    def convert(self, value, param, ctx) -> int | None:
        if value in (None, "auto"):
            return None
        if not str(value).isdigit() or not 1 <= int(value) <= 8:
            self.fail(f"{value!r}: auto or a count from 1 to 8", param, ctx)
        return int(value)


TOOLKIT = Group((
    click.option("--dtype", default="auto", show_default=True, metavar="DTYPE",
                 help="RKNN dtype. float16: no quantization (a W8A16 checkpoint's weights dequantized exactly); "
                      "w8a8: int8 weights and activations, calibrated on recorded sampler trajectories (see the "
                      "calibration options); w8a16 (rk3562): int8 weights, float16 activations; w4a16 (rk3576): "
                      "4-bit weights. auto: what keeps the model's own precision on the target (a W8A16 "
                      "checkpoint: w8a16 on rk3562, float16 elsewhere; report.json 'dtype_choice' says why). "
                      "`build` refuses a dtype the target cannot build, naming what it can; `diagnose` still "
                      "tries it, to see how the toolkit answers."),
    click.option("--parts", type=PartsCount(), default="auto", show_default=True, metavar="auto|N",
                 help="Build the graph as N .rknn files run one after another, each a consecutive piece with about "
                      "1/N of the weights, cut where the fewest activations cross: the toolkit builds one piece at a "
                      "time (the next starting as the one before finishes, see --parts-in-turn) and holds about 1/N "
                      "of the memory (SD 1.5 at 512 px: 15-16 GB peak built whole; in 2 parts 9.9 GB, 8.2 GB in "
                      "turn, this machine). The checks, generate, release and the board runner chain the parts; "
                      "a quantized part calibrates on what reaches it. auto: at most 2 GiB of float32 weights per "
                      "part, 1.25 GiB when quantized (SD 1.5: 2, as w8a8 3; the demo: 1); whole for the per-layer "
                      "report (it maps the whole graph)."),
    click.option("--parts-in-turn", is_flag=True,
                 help="Build the parts strictly one after another, each toolkit exiting before the next starts: the "
                      "least memory, a little slower. By default the next part's toolkit starts once the one before "
                      "has finished its build() (SD 1.5 at 512 px in 2 parts, this machine: 9.9 GB peak relayed, "
                      "8.2 GB in turn, ~20 s apart)."),
    click.option("--quant-algorithm", type=click.Choice(("auto",) + QUANT_ALGORITHMS), default=None,
                 help="How the toolkit picks each activation's int8 range from the calibration set (its "
                      "quantized_algorithm): normal (min/max, the toolkit's default), mmse (clipped where the error "
                      "is least), kl_divergence; auto: mmse for a build without the float16 search (--no-hybrid) "
                      "of at most 256 MiB of weights, else normal (report.json 'quant_algorithm_choice' says "
                      "why). Quantized builds only."),
), lambda values: {"dtype": values["dtype"], "parts": values["parts"], "parts_in_turn": values["parts_in_turn"],
                   "quant_algorithm": values["quant_algorithm"]},
    lambda req: {"dtype": req.dtype, "parts": "auto" if req.parts is None else req.parts,
                 "parts_in_turn": req.parts_in_turn, "quant_algorithm": req.quant_algorithm})


PASSES = Group((
    click.option("--passes", "passes", default=None, metavar="A,B,...",
                 help="Run exactly these graph passes, in this order, instead of the target's list."),
    click.option("--enable-pass", "enable_passes", multiple=True, metavar="PASS",
                 help="Turn on a pass the target lists but leaves off by default (rk3588: simplify). Repeatable."),
    click.option("--skip-pass", "skip_passes", multiple=True, metavar="PASS",
                 help="Leave out a pass (repeatable), e.g. to reproduce a toolkit failure."),
    click.option("--attention-tiles", "attention_tiles", default="auto", show_default=True, metavar="auto|off|N",
                 help="Split each attention along its queries into tiles (pass tile_attention; exact). auto: per "
                      "attention, the count with the least modelled DRAM traffic on the target (1 where its scores "
                      "fit on chip), at most the count past which the compiler's memory map stops shrinking (SD "
                      "1.5's 4096-token attention: 26); on rk3576 and rk3562 instead the toolkit's own flash "
                      "attention, which shrinks float16 attention more; N: N tiles everywhere; off: leave attention whole."),
), lambda values: {"passes": PassChoice(values["passes"], tuple(values["enable_passes"]), tuple(values["skip_passes"]),
                                        values["attention_tiles"])},
    lambda req: {"passes": req.passes.explicit, "enable_passes": req.passes.enable, "skip_passes": req.passes.skip,
                 "attention_tiles": req.passes.attention_tiles})


CALIB = Group((
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
), lambda values: {"calib": CalibSettings(values["schedule"], values["samples"], values["trajectories"],
                                          values["weighting"], values["prompts_path"], values["text_encoder_path"])},
    lambda req: {"schedule": req.calib.schedule, "samples": req.calib.samples, "trajectories": req.calib.trajectories,
                 "weighting": req.calib.weighting, "prompts_path": req.calib.prompts,
                 "text_encoder_path": req.calib.text_encoder})


CHECKS = Group((
    click.option("--layer-report", type=click.Choice(LAYER_REPORT_CHOICES), default="auto", show_default=True,
                 help="Compare every layer with ONNX Runtime (report.json 'layers', report.html). auto: only "
                      "when the toolkit's per-layer text dumps stay under 2 GiB (small models and resolutions)."),
    click.option("--check-samples", type=click.IntRange(1), default=1, show_default=True,
                 help="How many inputs to compare the .rknn with ONNX Runtime on."),
    click.option("--check-inputs", type=click.Choice(CHECK_INPUT_CHOICES), default="auto", show_default=True,
                 help="gaussian: unit-Gaussian latent and text states, timesteps spread over 0-999; trajectories: "
                      "held-out inputs recorded along the sampler's trajectories (other prompts and noise than the "
                      "calibration set). auto: trajectories for quantized builds, gaussian for float16."),
    click.option("--image-check", type=click.Choice(IMAGE_CHECK_CHOICES), default="auto", show_default=True,
                 help="Draw the model's evaluation set (a pipeline folder's rkconvert.json; the demo has one) with "
                      "ONNX Runtime and with the .rknn in the simulator, and compare the images (report.json "
                      "'images', images/grid.png). auto: when the model brings an evaluation set; on: any pipeline "
                      "(a single-file checkpoint too), one without a set drawing two generic prompts in 4 steps."),
), lambda values: {"checks": Checks(values["check_samples"], values["check_inputs"], values["layer_report"],
                                    values["image_check"])},
    lambda req: {"check_samples": req.checks.samples, "check_inputs": req.checks.inputs,
                 "layer_report": req.checks.layer_report, "image_check": req.checks.image_check})


GATES = Group((
    click.option("--min-psnr", type=float, default=40.0, show_default=True,
                 help="Output PSNR against ONNX Runtime (dB) the .rknn must reach: `build` fails under it, "
                      "`diagnose` calls a build that completes under it an accuracy failure."),
    click.option("--min-layer-cos", type=click.FloatRange(-1, 1), default=None,
                 help="Fail the build naming the first layer (execution order) whose output cosine against "
                      "ONNX Runtime is lower. Needs the per-layer report."),
    click.option("--min-prompt-accuracy", type=click.FloatRange(0, 1), default=None,
                 help="Fail the build when fewer of the .rknn's images show what their prompt asked for, as the "
                      "model's judge sees it (0-1; the demo has a judge)."),
), lambda values: {"gates": Gates(values["min_psnr"], values["min_layer_cos"], values["min_prompt_accuracy"])},
    lambda req: {"min_psnr": req.gates.min_psnr, "min_layer_cos": req.gates.min_layer_cos,
                 "min_prompt_accuracy": req.gates.min_prompt_accuracy})


class ModelNames(click.ParamType):
    """--npu-models: a comma list of the pipeline's models beside the UNet, or none."""

    name = "MODELS|none"

    def convert(self, value, param, ctx) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        names = () if value == "none" else tuple(n.strip() for n in str(value).split(","))
        unknown = [n for n in names if n not in NPU_MODEL_CHOICES]
        if unknown:
            self.fail(f"{unknown[0]!r}: {', '.join(NPU_MODEL_CHOICES)} (comma-separated), or none", param, ctx)
        return names


NPU_MODELS = Group((
    click.option("--npu-models", type=ModelNames(), default=",".join(NPU_MODEL_CHOICES), show_default=True,
                 metavar="MODELS|none",
                 help="A model that draws: its other models beside the UNet built for the NPU too, each a float16 build of "
                      "its own in BUILD_DIR/npu/<model>/ (the target's passes, checked against ONNX Runtime at "
                      "--min-psnr, report.json 'npu_models'). The image check, generate, release and the board runner "
                      "use them; a model that does not build stays on the CPU (onnxruntime), and the build says why. "
                      "none: the UNet alone on the NPU."),
), lambda values: {"npu_models": values["npu_models"]}, lambda req: {"npu_models": ",".join(req.npu_models) or "none"})


RAY = click.option(
    "--ray", "ray_address", default=None, metavar="auto|ADDRESS",
    help="Run toolkit builds as tasks on this Ray cluster (auto: the one started on this machine with `ray start`; "
         "or its HOST:PORT), each asking for its estimated memory: the hybrid search's trials (--hybrid-parallel at "
         "once, each the plain build's toolkit memory +25%), or a matrix's entries. --out must be a path every "
         "node sees.")

HYBRID = Group((
    click.option("--hybrid/--no-hybrid", default=True, show_default=True,
                 help="When a quantized build is under --min-psnr, keep the fewest of its costliest layers in float16 "
                      "that reach it: each layer's cost is measured by quantizing it alone (ONNX Runtime's emulation "
                      "of the toolkit's int8), and each try is a toolkit build."),
    click.option("--hybrid-max-float16", type=click.FloatRange(0, 1), default=0.25, show_default=True,
                 help="Search only when the emulation predicts the gate needs at most this share of the layers in "
                      "float16; past it the build stops before any try and says what the gate would take."),
    click.option("--toolkit-auto-hybrid", type=click.FloatRange(-1, 1), default=None, metavar="COS",
                 help="Instead of rkconvert's search, the toolkit's own: build(auto_hybrid=True), every layer whose "
                      "output cosine is under COS (its auto_hybrid_cos_thresh; 0.98 is its default) in float16. A "
                      "baseline: no search follows it (--min-psnr still judges it)."),
    click.option("--hybrid-builds", type=click.IntRange(1), default=12, show_default=True,
                 help="At most this many toolkit builds in the hybrid search (from the emulation's guess, each next "
                      "try where the emulation corrected by the tries so far puts the gate, doubling and bisection "
                      f"where it is off; it stops within {HybridSettings.slack:.0%} of the fewest); when they run "
                      "out, the fewest float16 layers found reaching --min-psnr are kept."),
    click.option("--hybrid-parallel", type=click.IntRange(1), default=1, show_default=True,
                 help="Toolkit builds at once in the hybrid search (each a child process holding the model: mind "
                      "memory, ~4.4x the float32 weights each). N at once cut its rounds from log2 to log_(N+1)."),
    click.option("--hybrid-rank-resolution", type=click.IntRange(1), default=HybridSettings.rank_resolution,
                 show_default=True, metavar="PX",
                 help="Take the ranking's gradients at this resolution when the build's is larger: the model "
                      "exported again at PX (inputs taken every n-th latent pixel) says how much each layer's int8 "
                      "error is amplified, one pass at the build's resolution how large it is (SD 1.5's gradients "
                      "at 512 px would need tens of GB). ONNX sources are ranked at their own shapes."),
    RAY,
), lambda values: {"hybrid": HybridSettings(values["hybrid"], values["hybrid_builds"], values["hybrid_parallel"],
                                            values["ray_address"], values["hybrid_max_float16"],
                                            values["toolkit_auto_hybrid"],
                                            rank_resolution=values["hybrid_rank_resolution"])},
    lambda req: {"hybrid": req.hybrid.enabled, "hybrid_builds": req.hybrid.builds,
                 "hybrid_parallel": req.hybrid.parallel, "ray_address": req.hybrid.ray_address,
                 "hybrid_max_float16": req.hybrid.max_float16, "toolkit_auto_hybrid": req.hybrid.toolkit_cos,
                 "hybrid_rank_resolution": req.hybrid.rank_resolution})


# What each command that works on a build takes; a failed build names its diagnose, and diagnose the
# build with its fix, through these.
BUILD_GROUPS = (MODEL, TARGET, RESOLUTIONS, OUTPUT, TOOLKIT, GATES, HYBRID, CHECKS, NPU_MODELS, CALIB, PASSES)
DIAGNOSE_GROUPS = (MODEL, TARGET, RESOLUTION, OUTPUT, TOOLKIT.only("dtype", "parts", "quant_algorithm"),
                   GATES.only("min_psnr"), CALIB, PASSES)
LINT_GROUPS = (MODEL, TARGET, RESOLUTION, OUTPUT, PASSES)
CALIB_GROUPS = (MODEL, TARGET, RESOLUTION, OUTPUT, CALIB, PASSES)
