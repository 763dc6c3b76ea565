"""Run a release bundle: on the board's NPU (rknn-toolkit-lite2), or on the host in the toolkit's
simulator (`--simulate BUILD_DIR`, the build folder the bundle was released from).

    python3 board/run.py                                   # checks, then one UNet step
    python3 board/run.py --prompt "a red circle on the left" --steps 20 --seed 1000

First the checks: every file's sha256 against manifest.json, and the board's librknnrt against the
version the model was built with. Then one UNet step on the build's own check input, compared with
ONNX Runtime's output (and, simulated, with the build's simulator output). With --prompt, the whole
loop of a model that draws: the tokenizer, the text encoder, the UNet with classifier-free guidance, the
bundle's sampler in numpy (DDIM, Euler, Euler-ancestral or LCM), the VAE decoder, a PNG; with --init-image,
the picture redrawn (img2img: the VAE encoder on the CPU, then the sampler from --strength). The UNet runs on
the NPU, and so do the text encoder and the VAE decoder where the bundle has their .rknn (--cpu-models:
onnxruntime on the CPU instead); one model is loaded at a time. Every part is timed; timing.json is what
to send back so board figures can sit beside the toolkit's estimate.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

BUNDLE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BUNDLE / "board"))

from clip_tokenizer import ClipTokenizer  # noqa: E402  (the board folder is not a package on the board)
from noise import TorchGenerator  # noqa: E402
from samplers import NAMES as SAMPLER_NAMES  # noqa: E402
from samplers import from_config as sampler_from_config  # noqa: E402
from samplers import guidance_embedding  # noqa: E402
from png import PngError, save_png  # noqa: E402
import redraw  # noqa: E402
from manifest import NAME as MANIFEST, ForSize, Manifest, ManifestError, Run  # noqa: E402

CORE_MASKS = {"auto": 0, "0": 1, "1": 2, "2": 4, "0_1": 3, "0_1_2": 7}


class RunnerError(Exception):
    """A check that failed: printed as one line, exit status 2."""


def checksums(manifest: Manifest) -> None:
    for name, entry in sorted(manifest.files.items()):
        digest = hashlib.sha256()
        with open(BUNDLE / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != entry.sha256:
            raise RunnerError(f"{name}: sha256 differs from {MANIFEST} (a damaged or edited bundle)")


def runtime_version(text: str) -> str | None:
    found = re.search(r"(?:librknnrt|rknnrt|API)\D*(\d+\.\d+\.\d+)", text)
    return found.group(1) if found else None


@contextlib.contextmanager
def on_npu(manifest: Manifest, runs: list[Run], core_mask: str):
    """infer(feed) -> the last run's first output on the board's NPU, after checking the runtime's version. A
    model built in parts (`runs`: the manifest's `parts`) is one RKNNLite per part, run in turn, each fed by
    name from the graph's inputs and the earlier parts' outputs."""
    try:
        from rknnlite.api import RKNNLite
    except ImportError:
        raise RunnerError("rknn-toolkit-lite2 is not installed (pip install rknn-toolkit-lite2; aarch64 only); "
                          "on the host, run with --simulate BUILD_DIR") from None
    loaded = []
    try:
        for run in runs:
            lite = RKNNLite(verbose=False)
            loaded.append(lite)
            if lite.load_rknn(str(BUNDLE / run.rknn)) != 0:
                raise RunnerError(f"{run.rknn}: load_rknn failed")
            if lite.init_runtime(core_mask=CORE_MASKS[core_mask]) != 0:
                raise RunnerError("init_runtime failed: is the NPU driver loaded and librknnrt installed?")
        have = runtime_version(str(loaded[0].get_sdk_version()))
        if have != manifest.librknnrt_version:
            raise RunnerError(f"this board's librknnrt is {have or 'of unknown version'}, the model was built by "
                              f"rknn-toolkit2 {manifest.toolkit_version}: install librknnrt "
                              f"{manifest.librknnrt_version} (a model from one toolkit fails on another runtime)")
        yield chain(runs, [lambda xs, lite=lite: lite.inference(inputs=xs, data_format=["nchw"] * len(xs))
                           for lite in loaded])
    finally:
        for lite in loaded:
            lite.release()


@contextlib.contextmanager
def on_cpu(onnx: Path):
    """infer(feed) -> the first output, in onnxruntime on the board's CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    yield lambda feed: session.run(None, feed)[0]


def chain(runs: list[Run], infers: list):
    """unet(feed) -> the last run's first output: each run's infer([input, ...]) -> [output, ...] fed by name
    from `feed` and the earlier runs' outputs."""
    def unet(feed: dict) -> np.ndarray:
        tensors = dict(feed)
        for run, infer in zip(runs, infers):
            outputs = infer([tensors[t.name] for t in run.inputs])
            tensors.update(zip((t.name for t in run.outputs), outputs))
        return tensors[runs[-1].outputs[0].name]
    return unet


def host_programs(one: ForSize):
    """timestep -> the rewritten graph's extra inputs (t_emb), computed on the CPU as on the board."""
    import onnxruntime

    sessions = [onnxruntime.InferenceSession(str(BUNDLE / p), providers=["CPUExecutionProvider"])
                for p in one.host_programs]

    def extra(timestep: float) -> dict[str, np.ndarray]:
        feed = {}
        for s in sessions:
            outputs = s.run(None, {"timestep": np.array([timestep], np.float32)})
            feed.update({o.name: v for o, v in zip(s.get_outputs(), outputs)})
        return feed
    return extra


def psnr_db(candidate: np.ndarray, reference: np.ndarray) -> float:
    """20 log10(max |reference| / RMSE), as rkconvert's reports compute it."""
    err = candidate.astype(np.float64) - reference.astype(np.float64)
    rmse = float(np.sqrt(np.mean(err ** 2)))
    return float("inf") if rmse == 0 else float(20 * np.log10(np.abs(reference).max() / rmse))


def step_check(one: ForSize, unet, simulated: bool) -> dict:
    check = BUNDLE / one.check.folder
    feed = {name: np.load(check / f"input-{name}.npy") for name in one.check.inputs}
    output = one.check.outputs[0]
    start = time.monotonic()
    out = np.asarray(unet(feed), np.float32)
    result = {"seconds": round(time.monotonic() - start, 4),
              "psnr_db_vs_onnxruntime": psnr_db(out, np.load(check / f"reference-{output}.npy"))}
    if simulated:
        result["max_abs_vs_build_simulator"] = float(np.abs(out - np.load(check / f"simulator-{output}.npy")).max())
    return result


def where(one: ForSize, model: str, cpu_models: bool) -> str:
    """Where a pipeline model runs: "npu" when the bundle has its .rknn and --cpu-models is not given."""
    return "npu" if model in one.npu_models() and not cpu_models else "cpu"


def encode(open_model, prompt: str, cfg: bool, timing: dict) -> list[np.ndarray]:
    """The text states of the empty prompt (with classifier-free guidance) and of `prompt`."""
    try:
        tokenizer = ClipTokenizer(BUNDLE / "tokenizer" / "tokenizer.json")
    except ValueError as e:  # a tokenizer this runner does not implement, named with the file
        raise RunnerError(str(e)) from None
    with open_model("text_encoder") as text_encoder:
        start = time.monotonic()
        texts = ["", prompt] if cfg else [prompt]
        states = [np.asarray(text_encoder({"input_ids": np.array([tokenizer(t)], np.int64)}), np.float32)
                  for t in texts]
        timing["text_encoder_seconds"] = round(time.monotonic() - start, 4)
    return states


def picture_to_redraw(one: ForSize, init_image: Path, strength: float) -> np.ndarray:
    """The picture an img2img run starts from, as the VAE encoder takes it; read before any model runs, so bad
    input costs nothing."""
    if not 0 < strength <= 1:
        raise RunnerError(f"--strength {strength}: from 0 (exclusive) to 1")
    try:
        return redraw.picture(init_image, one.resolution)
    except (OSError, PngError, ValueError) as e:
        raise RunnerError(f"--init-image {e}") from None


def starting(one: ForSize, open_model, sampler, generator, image: np.ndarray | None, steps: int, strength: float,
             timing: dict) -> np.ndarray:
    """The latents the sampler starts from: the seed's noise, or `image` (picture_to_redraw) encoded and noised."""
    if image is None:
        return generator.randn(tuple(one.pipeline.latent_shape)) * sampler.init_noise_sigma
    with open_model("vae_encoder") as vae_encoder:
        begun = time.monotonic()
        moments = np.asarray(vae_encoder({"image": image}), np.float32)
        timing["encoder_seconds"] = round(time.monotonic() - begun, 4)
    return redraw.start(moments, one.pipeline.latent_shape[1], one.pipeline.vae_scaling_factor, sampler, steps,
                        strength, generator)


def denoise(one: ForSize, unet, states: list[np.ndarray], sampler, generator, latents: np.ndarray, guidance: float,
            timing: dict) -> np.ndarray:
    """The latents after the sampler's steps from `latents`, as StableDiffusionPipeline denoises them."""
    extra = host_programs(one)
    fixed = conditioning(one, guidance)
    cfg = len(states) == 2
    timing["unet_step_seconds"] = []
    for i, t in enumerate(sampler.timesteps):
        start = time.monotonic()
        base = {"sample": sampler.scale(latents, i), **extra(float(t)), **fixed}
        eps = [np.asarray(unet({**base, "encoder_hidden_states": s}), np.float32) for s in states]
        noise = eps[0] + guidance * (eps[1] - eps[0]) if cfg else eps[0]
        latents = sampler.step(noise, i, latents, generator)
        timing["unet_step_seconds"].append(round(time.monotonic() - start, 4))
    return latents


def conditioning(one: ForSize, guidance: float) -> dict[str, np.ndarray]:
    """The UNet's inputs beyond sample, timestep and text states, as the manifest says to make them; their widths
    are the check input's."""
    made = {}
    for name, source in one.pipeline.conditioning.items():
        if source != "guidance":
            raise RunnerError(f"the UNet's input {name} comes from {source!r}, which this runner cannot make")
        width = np.load(BUNDLE / one.check.folder / f"input-{name}.npy").shape[-1]
        made[name] = guidance_embedding(guidance, width)  # an LCM UNet: one pass per step, guidance embedded
    return made


def decode(one: ForSize, open_model, latents: np.ndarray, timing: dict) -> np.ndarray:
    """The (H, W, 3) uint8 image of the VAE decoder."""
    with open_model("vae_decoder") as vae_decoder:
        start = time.monotonic()
        scaled = (latents / np.float32(one.pipeline.vae_scaling_factor)).astype(np.float32)
        image = np.asarray(vae_decoder({"latents": scaled}), np.float32)
        timing["decoder_seconds"] = round(time.monotonic() - start, 4)
    pixels = np.clip(image[0].transpose(1, 2, 0) / 2 + 0.5, 0, 1)
    return np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)


def sampler_for(steps: int, scheduler: str | None):
    """The bundle's sampler (or `scheduler`, a samplers.NAMES key), set for `steps`."""
    try:
        sampler = sampler_from_config(BUNDLE / "scheduler" / "scheduler_config.json", scheduler)
        sampler.set(steps)
    except ValueError as e:  # a sampler this runner does not implement, named with the file
        raise RunnerError(str(e)) from None
    return sampler


def _args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--prompt", help="draw this prompt (models with a text encoder and decoder)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's own)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed, as torch.Generator().manual_seed")
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: the model's own")
    parser.add_argument("--init-image", type=Path, default=None, metavar="PNG",
                        help="redraw this picture of the bundle's size (img2img) under --prompt")
    parser.add_argument("--strength", type=float, default=0.8,
                        help="with --init-image: how much of the noise schedule runs over it (0 to 1; default 0.8)")
    parser.add_argument("--scheduler", choices=sorted(SAMPLER_NAMES), default=None,
                        help="sampler (default: the one scheduler/scheduler_config.json names)")
    parser.add_argument("--size", type=int, default=None,
                        help="image size in pixels, for a bundle of several (default: its first)")
    parser.add_argument("--cpu-models", action="store_true",
                        help="run the text encoder and the VAE decoder in onnxruntime on the CPU, even where the "
                             "bundle has their .rknn")
    parser.add_argument("--core-mask", choices=sorted(CORE_MASKS), default="auto", help="NPU cores (RK3588: 0, 1, 2)")
    parser.add_argument("--out", type=Path, default=Path("rkconvert-out"), help="folder for the PNG and timing.json")
    parser.add_argument("--simulate", type=Path, metavar="BUILD_DIR",
                        help="on the host: the toolkit's simulator, rebuilt from the build folder of this bundle")
    parser.add_argument("--skip-checksums", action="store_true", help="do not hash the bundle's files first")
    return parser.parse_args(argv)


def host_simulator():
    """The host's rkconvert, as it registers itself for `--simulate` (the entry point rkconvert.board:
    simulator): a module with in_simulator(build_dir, manifest, one, model) and the ERRORS it raises."""
    from importlib.metadata import entry_points

    found = entry_points(group="rkconvert.board", name="simulator")
    if not found:
        raise RunnerError("--simulate needs rkconvert installed in this Python (the toolkit's simulator runs on "
                          "the host)")
    return next(iter(found)).load()


def main(argv=None) -> int:
    args = _args(argv)
    host_errors: tuple = ()  # with --simulate: rkconvert's own one-line errors
    try:
        bundled = Manifest.loads((BUNDLE / MANIFEST).read_bytes())
        if not args.skip_checksums:
            checksums(bundled)
        one = bundled.at(args.size)
        if args.init_image and not args.prompt:
            raise RunnerError("--init-image redraws a picture under --prompt: give one")
        if args.prompt and not one.pipeline:
            raise RunnerError(f"{bundled.model} is a UNet alone: this bundle has no text encoder or decoder")
        picture = picture_to_redraw(one, args.init_image, args.strength) if args.init_image else None
        timing = {"bundle": BUNDLE.name, "size": one.resolution, "target": bundled.target, "dtype": bundled.dtype,
                  "machine": platform.machine(), "backend": "simulator" if args.simulate else "npu",
                  "core_mask": args.core_mask}
        if args.simulate:
            host = host_simulator()
            host_errors = host.ERRORS

        def open_model(model: str):
            """The UNet, or a pipeline model, loaded where this run puts it: infer(feed) -> first output."""
            if model != "unet" and where(one, model, args.cpu_models) == "cpu":
                return on_cpu(BUNDLE / one.pipeline.cpu[model])
            if args.simulate:
                return host.in_simulator(args.simulate, bundled, one, None if model == "unet" else model)
            return on_npu(bundled, one.runs() if model == "unet" else [one.npu_models()[model]], args.core_mask)

        if args.prompt:
            steps = args.steps or one.pipeline.steps
            guidance = one.pipeline.guidance_scale if args.guidance_scale is None else args.guidance_scale
            sampler = sampler_for(steps, args.scheduler)
            used = ["text_encoder", "vae_decoder", *(["vae_encoder"] if args.init_image else [])]
            timing.update(prompt=args.prompt, seed=args.seed, steps=steps, guidance_scale=guidance,
                          on={model: where(one, model, args.cpu_models) for model in used})
            if args.init_image:
                timing.update(init_image=args.init_image.name, strength=args.strength)
            cfg = guidance > 1 and "guidance" not in one.pipeline.conditioning.values()
            states = encode(open_model, args.prompt, cfg, timing)
            generator = TorchGenerator(args.seed)
            latents = starting(one, open_model, sampler, generator, picture, steps, args.strength, timing)
        with open_model("unet") as unet:
            timing["unet_check"] = step_check(one, unet, bool(args.simulate))
            print(f"UNet step on the check input: {timing['unet_check']['seconds']:.3f} s, PSNR "
                  f"{timing['unet_check']['psnr_db_vs_onnxruntime']:.1f} dB against ONNX Runtime")
            if args.prompt:
                latents = denoise(one, unet, states, sampler, generator, latents, guidance, timing)
        if args.prompt:
            image = decode(one, open_model, latents, timing)
            args.out.mkdir(parents=True, exist_ok=True)
            png = args.out / f"{args.seed}-{re.sub(r'[^a-z0-9]+', '-', args.prompt.lower()).strip('-')[:60]}.png"
            save_png(png, image)
            timing["image"] = png.name
            on = ", ".join(f"{model.replace('_', ' ')} on the {place.upper()}" for model, place in timing["on"].items())
            print(f"{png}: text encoder {timing['text_encoder_seconds']:.3f} s, {steps} UNet steps "
                  f"{sum(timing['unet_step_seconds']):.3f} s, decoder {timing['decoder_seconds']:.3f} s ({on})")
    except (RunnerError, ManifestError, *host_errors) as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(f"timing: {args.out / 'timing.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
