"""The `rkconvert` command line."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from rich.console import Console

from converter import __version__
from converter.pipeline.request import CHECK_INPUT_CHOICES, IMAGE_CHECK_CHOICES, LAYER_REPORT_CHOICES, CalibSettings
from converter.cli_options import as_arguments, calib_options, model_options, pass_options, target_options
from converter.common.errors import BuildFailed, UserError

EXIT_CODES = "Exit status: 0 built and within the gates, 1 build failed (toolkit crash or refusal, accuracy gate), 2 bad input."


class OneLineErrors(click.Group):
    """Every failure ends as `rkconvert: error: <one line>` and a non-zero exit, never a traceback."""

    def main(self, args=None, **kwargs):
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        try:
            return super().main(args=args, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort:
            console.print("rkconvert: interrupted")
            sys.exit(130)
        except click.UsageError as e:
            console.print(f"rkconvert: error: {e.format_message()}", markup=False)
            sys.exit(2)
        except (UserError, BuildFailed) as e:
            console.print(f"rkconvert: error: {e}", markup=False)
            for line in getattr(e, "details", ()):
                console.print(line, markup=False, style="dim")
            sys.exit(e.exit_code)


@click.group(cls=OneLineErrors, epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="rkconvert")
def main():
    """Convert diffusion UNets into .rknn models for Rockchip NPUs, checked against ONNX Runtime."""


def _request(model_spec, config_path, trust_pickle, seed, target, resolution, out, **settings):
    """The BuildRequest both `build` and `lint` work from (bad model or target: UserError)."""
    from converter.pipeline.request import BuildRequest
    from converter.models.model_source import resolve
    from targets import get_chip

    chip = get_chip(target)
    source = resolve(model_spec, config_path, trust_pickle, seed)
    return BuildRequest(source, chip, out or Path("build") / f"{source.name}-{chip.name}", resolution=resolution,
                        seed=seed, **settings)


class PartsCount(click.ParamType):
    """--parts: None for auto, else a count from 1 to 8 (a type, not a callback: ctx.invoke converts defaults
    through types only, and diagnose --apply invokes build)."""

    name = "auto|N"

    def convert(self, value, param, ctx) -> int | None:
        if value in (None, "auto"):
            return None
        if not str(value).isdigit() or not 1 <= int(value) <= 8:
            self.fail(f"{value!r}: auto or a count from 1 to 8", param, ctx)
        return int(value)


@main.command(epilog=EXIT_CODES)
@model_options
@target_options
@click.option("--dtype", default="auto", show_default=True, metavar="DTYPE",
              help="RKNN dtype. float16: no quantization (a W8A16 checkpoint's weights dequantized exactly); "
                   "w8a8: int8 weights and activations, calibrated on recorded sampler trajectories (see the "
                   "calibration options); w8a16 (rk3562): int8 weights, float16 activations; w4a16 (rk3576): "
                   "4-bit weights. auto: what keeps the model's own precision on the target (a W8A16 "
                   "checkpoint: w8a16 on rk3562, float16 elsewhere; report.json 'dtype_choice' says why). A dtype the target cannot build is refused naming what it can.")
@click.option("--min-psnr", type=float, default=40.0, show_default=True,
              help="Fail the build when the .rknn's output PSNR against ONNX Runtime (dB) is lower.")
@click.option("--hybrid/--no-hybrid", default=True, show_default=True,
              help="When a quantized build is under --min-psnr, keep the fewest of its noisiest layers (per-layer "
                   "report) in float16 that reach it; each try is a toolkit build.")
@click.option("--hybrid-builds", type=click.IntRange(1), default=12, show_default=True,
              help="At most this many toolkit builds in the hybrid search (doubling, then bisection); when they "
                   "run out, the fewest float16 layers found reaching --min-psnr are kept.")
@click.option("--hybrid-parallel", type=click.IntRange(1), default=1, show_default=True,
              help="Toolkit builds at once in the hybrid search (each a child process holding the model: mind "
                   "memory, ~4.4x the float32 weights each). N at once cut its rounds from log2 to log_(N+1).")
@click.option("--ray", "ray_address", default=None, metavar="auto|ADDRESS",
              help="Run the hybrid search's builds as tasks on this Ray cluster (auto: the one started here with "
                   "`ray start`), --hybrid-parallel at once, each asking for the plain build's toolkit memory "
                   "+25%. --out must be a path every node sees.")
@click.option("--parts", type=PartsCount(), default="auto", show_default=True, metavar="auto|N",
              help="Build the graph as N .rknn files run one after another, each a consecutive piece with about "
                   "1/N of the weights, cut where the fewest activations cross: the toolkit builds one piece at a "
                   "time and holds about 1/N of the memory (SD 1.5 at 512 px: 15.0 GB peak built whole, 8.4 GB "
                   "in 2 parts, this machine). The checks, generate, release and the board runner chain the parts; "
                   "a quantized part calibrates on what reaches it. auto: at most 2 GiB of float32 weights per "
                   "part (SD 1.5: 2; the demo: 1); whole for the per-layer report (it maps the whole graph).")
@click.option("--min-layer-cos", type=click.FloatRange(-1, 1), default=None,
              help="Fail the build naming the first layer (execution order) whose output cosine against "
                   "ONNX Runtime is lower. Needs the per-layer report.")
@click.option("--layer-report", type=click.Choice(LAYER_REPORT_CHOICES), default="auto", show_default=True,
              help="Compare every layer with ONNX Runtime (report.json 'layers', report.html). auto: only "
                   "when the toolkit's per-layer text dumps stay under 2 GiB (small models and resolutions).")
@click.option("--check-samples", type=click.IntRange(1), default=1, show_default=True,
              help="How many inputs to compare the .rknn with ONNX Runtime on.")
@click.option("--check-inputs", type=click.Choice(CHECK_INPUT_CHOICES), default="auto", show_default=True,
              help="gaussian: unit-Gaussian latent and text states, timesteps spread over 0-999; trajectories: "
                   "held-out inputs recorded along the sampler's trajectories (other prompts and noise than the "
                   "calibration set). auto: trajectories for quantized builds, gaussian for float16.")
@click.option("--image-check", type=click.Choice(IMAGE_CHECK_CHOICES), default="auto", show_default=True,
              help="Draw the model's evaluation set (a pipeline folder's rkconvert.json; the demo has one) with "
                   "ONNX Runtime and with the .rknn in the simulator, and compare the images (report.json "
                   "'images', images/grid.png). auto: when the model brings an evaluation set.")
@click.option("--min-prompt-accuracy", type=click.FloatRange(0, 1), default=None,
              help="Fail the build when fewer of the .rknn's images show what their prompt asked for, as the "
                   "model's judge sees it (0-1; the demo has a judge).")
@calib_options
@pass_options
@click.option("--rebuild", is_flag=True, help="Ignore stages kept from earlier runs.")
def build(model_spec, config_path, trust_pickle, seed, target, resolution, out, dtype, min_psnr, hybrid, hybrid_builds,
          hybrid_parallel, ray_address, parts, min_layer_cos, layer_report, check_samples, check_inputs, image_check, min_prompt_accuracy, schedule, samples,
          trajectories, weighting, prompts_path, text_encoder_path, passes, enable_passes, skip_passes, attention_tiles,
          rebuild):
    """Build MODEL into a .rknn for --target and check it against ONNX Runtime.

    Stages: export (trace to static-shape ONNX, opset 17) -> passes (the target's graph rewrites) ->
    reference (ONNX Runtime outputs on check inputs) -> rknn (rknn-toolkit2 build and simulator run,
    in a child process) -> layers (every layer the simulator dumps against ONNX Runtime) -> images
    (text to image through ONNX Runtime and through the .rknn, for models that can draw) ->
    report.json + report.html. The .rknn, the reports and any host programs (small ONNX models
    computing inputs such as t_emb from the timestep on the board's CPU) land in --out.
    """
    from converter.pipeline.build import build as run_build
    from converter.common.progress import Progress
    from converter.reports.report import print_summary

    settings = CalibSettings(schedule, samples, trajectories, weighting, prompts_path, text_encoder_path)
    req = _request(model_spec, config_path, trust_pickle, seed, target, resolution, out, dtype=dtype,
                   min_psnr=min_psnr, hybrid=hybrid, hybrid_builds=hybrid_builds, hybrid_parallel=hybrid_parallel,
                   ray_address=ray_address, parts=parts, min_layer_cos=min_layer_cos,
                   layer_report=layer_report, check_samples=check_samples, check_inputs=check_inputs,
                   image_check=image_check, min_prompt_accuracy=min_prompt_accuracy, calib=settings, passes=passes,
                   enable_passes=tuple(enable_passes), skip_passes=tuple(skip_passes), attention_tiles=attention_tiles,
                   rebuild=rebuild, command=shlex.join(["rkconvert", *sys.argv[1:]]))
    try:
        report = run_build(req, Progress(Console(stderr=True, highlight=False)))
    except BuildFailed as e:
        if e.ending is not None:  # the toolkit died, refused or errored: diagnose takes it from here
            params = {k: v for k, v in click.get_current_context().params.items() if k != "rebuild"}
            again = as_arguments(params, diagnose)  # same folder: its stages are reused
            e.details = (*e.details, f"find out why: {shlex.join(['rkconvert', 'diagnose', *again])}")
        raise
    print_summary(Console(), report, req.report_path)


@main.command(epilog="Exit status: 0 nothing left without a fix, 1 something is, 2 bad input.")
@model_options
@target_options
@pass_options
def lint(model_spec, config_path, trust_pickle, seed, target, resolution, out, passes, enable_passes, skip_passes,
         attention_tiles):
    """List what --target would refuse, run on the CPU, crash on or convert wrongly in MODEL, without building.

    Each finding names the node and the pass that removes it; the target's pass list (as adjusted by
    --passes / --enable-pass / --skip-pass) is run and the graph checked again, and anything left has
    no fix in that list.
    """
    from converter.pipeline.build_dir import BuildDir
    from converter.pipeline.pass_selection import select
    from converter.pipeline.build import export_model
    from converter.common import onnx_files
    from converter.common.progress import Progress
    from converter.lint.check import lint as run_lint
    from converter.lint.report import print_lint

    req = _request(model_spec, config_path, trust_pickle, seed, target, resolution, out)
    names = select(req.chip, passes, tuple(enable_passes), tuple(skip_passes), attention_tiles)
    exported = export_model(req, BuildDir(req.out), Progress(Console(stderr=True, highlight=False)))
    result = run_lint(onnx_files.load_lazy(exported.path / exported.meta["onnx"]), req.chip, names)
    print_lint(Console(), result, req.chip, names)
    sys.exit(1 if result.remaining else 0)


@main.command(epilog="Exit status: 0 no failure (with --apply: the fixed build passed), 1 a failure was diagnosed "
                     "(with --apply: and the fixed build failed, or there is no known fix), 2 bad input.")
@model_options
@target_options
@click.option("--dtype", default="auto", show_default=True, metavar="DTYPE",
              help="RKNN dtype to ask the toolkit for, as `build` takes it; one rkconvert refuses for the target is "
                   "still tried, to see how the toolkit answers.")
@click.option("--min-psnr", type=float, default=40.0, show_default=True,
              help="Output PSNR against ONNX Runtime (dB) under which a build that completes is an accuracy failure.")
@click.option("--budget", "budget_s", type=click.FloatRange(1), default=None, metavar="SECONDS",
              help="Stop a toolkit run after this long and call it no progress (default: 120 s plus 120 s per GB "
                   "of ONNX). Each candidate of the reduction gets the same budget.")
@click.option("--known-failures", "catalogue", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="Catalogue of known failures to match against (default: converter/toolkit/known_failures.toml).")
@calib_options
@pass_options
@click.option("--rebuild", is_flag=True, help="Ignore stages kept from earlier runs.")
@click.option("--apply", "apply_fix", is_flag=True,
              help="When the failure is a known one, run the build with its fix (into the same --out, reusing its "
                   "stages) and show the result; exit status is then the build's.")
def diagnose(model_spec, config_path, trust_pickle, seed, target, resolution, out, dtype, min_psnr, budget_s,
             catalogue, schedule, samples, trajectories, weighting, prompts_path, text_encoder_path, passes,
             enable_passes, skip_passes, attention_tiles, rebuild, apply_fix):
    """Find out why MODEL fails to build for --target, and what fixes it.

    Takes the same model, target, dtype and pass options as `build` and runs its stages up to the
    toolkit, then the toolkit alone (in a child process, under a time budget), and classifies the
    outcome: crash (signal), abort (heap corruption), refusal at config(), toolkit error, no progress,
    out of memory, or accuracy under --min-psnr. A crash, error or hang is reduced with Polygraphy's
    `debug reduce` (bisection, then node by node; every candidate a toolkit build in a child process)
    to the smallest subgraph that fails the same way, which is looked up in the catalogue of known
    failures: a match names its fix and the build command with it (--apply runs it). An accuracy failure
    is located with the per-layer report instead: the first layer that departs from ONNX Runtime
    (a toolkit rewrite, or quantization / float16 noise), and the smallest ring of nodes around it that
    fails the gate alone. Writes --out/diagnosis/: diagnosis.json, repro.onnx, repro.py (rknn-toolkit2
    alone: ready to report upstream) and the logs; a failed build's report.html links to it.
    """
    from converter.pipeline.pass_selection import select
    from converter.common.progress import Progress
    from converter.diagnose.diagnosis import DIAGNOSIS_DIR
    from converter.diagnose.diagnosis import diagnose as run_diagnose
    from converter.diagnose.remedy import remedied
    from converter.diagnose.summary import print_diagnosis
    from converter.toolkit.known_failures import CATALOGUE

    settings = CalibSettings(schedule, samples, trajectories, weighting, prompts_path, text_encoder_path)
    req = _request(model_spec, config_path, trust_pickle, seed, target, resolution, out, dtype=dtype,
                   min_psnr=min_psnr, calib=settings, passes=passes, enable_passes=tuple(enable_passes),
                   skip_passes=tuple(skip_passes), attention_tiles=attention_tiles, rebuild=rebuild)
    names = select(req.chip, passes, tuple(enable_passes), tuple(skip_passes), attention_tiles)
    result = run_diagnose(req, names, Progress(Console(stderr=True, highlight=False)), budget_s,
                          catalogue or CATALOGUE)
    console = Console(highlight=False, soft_wrap=True)
    print_diagnosis(console, result, req.out / DIAGNOSIS_DIR)
    if result["failure"] is None or result["known"] is None:
        if apply_fix:
            console.print("--apply: nothing to apply", markup=False)
        sys.exit(0 if result["failure"] is None else 1)
    ctx = click.get_current_context()
    fixed = remedied({k: v for k, v in ctx.params.items() if k != "rebuild"}, result["known"]["remedy"], req.chip)
    fixed = {p.name: fixed[p.name] for p in build.params if p.name in fixed}
    console.print(f"build with the fix: {shlex.join(['rkconvert', 'build', *as_arguments(fixed, build)])}",
                  markup=False)
    if not apply_fix:
        sys.exit(1)
    ctx.invoke(build, **fixed)  # a build that fails still raises: exit 1 with its error


@main.command(epilog=EXIT_CODES)
@model_options
@target_options
@calib_options
@pass_options
def calib(model_spec, config_path, trust_pickle, seed, target, resolution, out, schedule, samples, trajectories,
          weighting, prompts_path, text_encoder_path, passes, enable_passes, skip_passes, attention_tiles):
    """Record a calibration set: the UNet's real inputs along the sampler's trajectories.

    Runs diffusers' StableDiffusionPipeline (text encoder, scheduler, classifier-free guidance) on the
    host, keeps --samples of the UNet's inputs as the rewritten graph takes them, and writes them in
    RKNN's dataset format (stages/calib/dataset.txt, one line per sample) with calib.json (per-input
    statistics, overall and per timestep). Deterministic for --seed; reused by `build` when unchanged.
    """
    from converter.pipeline.build_dir import BuildDir
    from converter.pipeline.pass_selection import select
    from converter.pipeline.build import calibration, prepare
    from converter.common.progress import Progress
    from converter.reports.report import print_calibration

    settings = CalibSettings(schedule, samples, trajectories, weighting, prompts_path, text_encoder_path)
    req = _request(model_spec, config_path, trust_pickle, seed, target, resolution, out, calib=settings,
                   attention_tiles=attention_tiles)
    names = select(req.chip, passes, tuple(enable_passes), tuple(skip_passes), attention_tiles)
    progress = Progress(Console(stderr=True, highlight=False))
    build_dir = BuildDir(req.out)
    export, prepared = prepare(req, names, build_dir, progress)
    print_calibration(Console(), calibration(req, export, prepared, build_dir, progress))


@main.command(epilog=EXIT_CODES)
@model_options
@click.option("--resolution", type=int, default=None,
              help="Image size the ONNX form is traced at (default: the model's own).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder to write (replaced if it exists).")
def quantize(model_spec, config_path, trust_pickle, seed, resolution, out):
    """W8A16 weight-only quantization of MODEL's Conv and Linear weights (symmetric, per output channel).

    Each channel's int8 range is the better of min-max and a histogram search (least weight MSE).
    Writes a diffusers folder whose safetensors hold int8 weights + float32 scales, the same model as
    ONNX with weight-only DequantizeLinear (unet-w8a16.onnx), and quantize.json. Both forms build
    with `rkconvert build --model OUT` (or OUT/unet-w8a16.onnx).
    """
    from converter.models.model_source import resolve
    from converter.quantize_command import quantize as run_quantize

    source = resolve(model_spec, config_path, trust_pickle, seed)
    with Console(stderr=True).status(f"quantizing {model_spec}"):
        summary = run_quantize(source, out, resolution)
    Console().print(f"{summary['layers']} layers to int8 (weight SQNR mean {summary['weight_sqnr_db_mean']:.1f} dB, "
                    f"min {summary['weight_sqnr_db_min']:.1f} dB; {summary['histogram_channels']} of "
                    f"{summary['channels']} channels clipped by the histogram search); weights "
                    f"{summary['fp32_weight_bytes'] / 2**20:.1f} MiB fp32 -> {summary['safetensors_bytes'] / 2**20:.1f} MiB "
                    f"in {out}")


@main.command(epilog="Exit status: 0 images written, 1 the toolkit failed, 2 bad input.")
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--prompt", "prompts", multiple=True, required=True,
              help="What to draw (repeatable: the prompts are denoised together).")
@click.option("--steps", type=click.IntRange(1), default=None,
              help="Denoising steps (default: the model's evaluation setting, else 20).")
@click.option("--guidance-scale", type=click.FloatRange(0), default=None,
              help="Classifier-free guidance (default: the model's evaluation setting, else 7.5).")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed of the first prompt (then +1 each).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for the PNGs (default: BUILD_DIR/images/).")
def generate(build_dir, prompts, steps, guidance_scale, seed, out):
    """Draw --prompt with a finished build's model, once with the reference UNet (ONNX Runtime on the
    final ONNX) and once with its .rknn in rknn-toolkit2's simulator.

    The tokenizer, text encoder, scheduler (with classifier-free guidance) and VAE run on the host; the
    toolkit rebuilds the .rknn in a child process (its simulator only runs a model it has just built)
    and checks the rebuild against the build's own check output first. Writes NN-reference.png,
    NN-rknn.png, NN-difference.png (x4) per prompt and grid.png.
    """
    from converter.common.progress import Progress
    from converter.generate.from_build import generate as run_generate

    out = out or build_dir / "images"
    rows = run_generate(build_dir, list(prompts), seed, steps, guidance_scale, out,
                        Progress(Console(stderr=True, highlight=False)))
    console = Console(highlight=False)
    for i, row in enumerate(rows):
        console.print(f"{out / row['rknn']}  seed {row['seed']}  vs reference: PSNR {row['psnr_db']:.1f} dB, "
                      f"SSIM {row['ssim']:.4f}  {row['prompt']!r}", markup=False)
    console.print(f"grid (reference | .rknn | difference x4): {out / 'grid.png'}", markup=False)


@main.command(epilog=EXIT_CODES)
@click.argument("build_a", type=click.Path(path_type=Path))
@click.argument("build_b", type=click.Path(path_type=Path))
@click.option("--top", type=click.IntRange(1), default=20, show_default=True, help="Layers shown in the table.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write every paired layer (both rows and the SQNR change) to this file.")
def compare(build_a, build_b, top, json_path):
    """Put two builds side by side: outputs, then every layer, largest SQNR change first.

    BUILD_A and BUILD_B are build folders (or their report.json). Layers pair up by the toolkit's
    layer name, the rest by the ONNX tensor they match, so the same model built with different
    passes or toolkits lines up.
    """
    from converter.reports.compare_builds import join_layers, load_report, print_comparison
    from converter.reports.report import write_json

    a, b = load_report(build_a), load_report(build_b)
    joined = join_layers(a.get("layers") or [], b.get("layers") or [])
    print_comparison(Console(), a, b, (str(build_a), str(build_b)), joined, top)
    if json_path:
        write_json(json_path, {"a": str(build_a), "b": str(build_b), "layers": joined})


@main.command(epilog="Exit status: 0 written, 2 bad input.")
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="NAME.tar.gz to write; its members sit under NAME/. Default: BUILD_DIR.tar.gz beside BUILD_DIR.")
def release(build_dir, out):
    """Bundle a finished build for the board: the .rknn, host programs, report.json/html and
    manifest.json (target, toolkit and compiler version and the librknnrt version the board needs, I/O
    dtypes and layouts, all read from the .rknn itself; accuracy; the build command; the sha256 of every
    file). The same build folder always gives a byte-identical bundle.
    """
    from converter.release.bundle import default_out
    from converter.release.bundle import release as write_release

    out = out or default_out(build_dir)
    made = write_release(build_dir, out)
    psnr = made["accuracy"]["output_psnr_db"]
    click.echo(f"{out}: {len(made['files'])} files, {made['target']} {made['dtype']}, needs librknnrt "
               f"{made['librknnrt_version']}" + (f", {psnr:.1f} dB vs ONNX Runtime" if psnr is not None else ""))


@main.command(epilog="Exit status: 0 the bundle is what its manifest says, 1 it is not, 2 bad input "
                     "(not a bundle, or unsafe members: absolute paths, '..', links, devices).")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--run", "build_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Then run the bundle's board runner with --simulate BUILD_DIR (the build folder it was released "
                   "from; the simulator cannot run a .rknn file): its UNet output must equal the build's check.")
def verify(bundle, build_dir):
    """Check a release bundle: every file's sha256 and size against manifest.json, no file missing or
    added, the manifest's schema, and the .rknn's own account (target, versions, I/O, node counts)
    agreeing with the manifest. Unsafe members are refused before anything is written."""
    from converter.common.errors import UserError
    from converter.release.verify import smoke_run
    from converter.release.verify import verify as check

    if not bundle.is_file():
        raise UserError(f"{bundle}: no such file")
    made, found = check(bundle)
    if build_dir is not None and not found:
        timing, found = smoke_run(bundle, build_dir)
        if timing:
            click.echo(f"{bundle}: board/run.py --simulate: the UNet's output on the check input equals the build's "
                       f"(PSNR {timing['unet_check']['psnr_db_vs_onnxruntime']:.1f} dB against ONNX Runtime)")
    for line in found:
        click.echo(f"{bundle}: {line}", err=True)
    if found:
        sys.exit(1)
    click.echo(f"{bundle}: verified, {len(made['files'])} files match manifest.json; {made['target']}, "
               f"rknn-toolkit2 {made['toolkit_version']} (board needs librknnrt {made['librknnrt_version']})")


def _option_kinds(command: click.Command) -> dict[str, str]:
    """A command's options by long name: flag, switch (--x/--no-x), multiple (repeatable) or value."""
    kinds = {}
    for param in command.params:
        if isinstance(param, click.Option):
            kind = "switch" if param.secondary_opts else "flag" if param.is_flag else \
                "multiple" if param.multiple else "value"
            kinds[param.opts[0].removeprefix("--")] = kind
    return kinds


@main.command(epilog="Exit status: 0 every entry built within its gates, 1 some entry did not, 2 bad input "
                     "(a matrix file that cannot be read).")
@click.argument("matrix_path", metavar="MATRIX.toml", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for the entries' build folders, logs/ and summary.json / summary.html "
                   "(default: build/matrix-<file name>/). Stages found there with unchanged inputs are reused.")
@click.option("--ray", "ray_address", default=None, metavar="auto|ADDRESS",
              help="Run each build as a task on a Ray cluster (auto: the one started on this machine with "
                   "`ray start`; or its HOST:PORT), asking for its estimated memory. --out must be a path every "
                   "node sees.")
def matrix(matrix_path, out, ray_address):
    """Build every entry of MATRIX.toml, each an ordinary `rkconvert build` in its own process and
    folder (one at a time, or on Ray); then one summary: status, PSNR, size, estimated cost and time.
    A failed entry (toolkit crash, refusal, accuracy gate) is a row; the others go on.

    \b
    [defaults]          # build options every entry gets, named as in `build --help`
    resolution = 64
    [axes]              # every combination is an entry
    model = ["sd15:mini", "bk-sdm-tiny:mini"]
    target = ["rk3588", "rk3576"]
    dtype = ["float16", "w8a8"]
    [[entry]]           # more entries, one by one
    model = "demo"
    target = "rk3588"
    """
    from converter.matrix.command import run_matrix

    rows = run_matrix(matrix_path, out, _option_kinds(build), Console(highlight=False, soft_wrap=True), ray_address)
    sys.exit(0 if all(r["status"] == "ok" for r in rows) else 1)


if __name__ == "__main__":
    main()
