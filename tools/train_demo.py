"""Train rkconvert's demo text-to-image model on this machine's CPU, from procedurally drawn scenes.

    .venv/bin/python tools/train_demo.py --work /tmp/demo-train --out converter/models/demo/pipeline

Latent diffusion, as Stable Diffusion: a small AutoencoderKL (8x down, 4 latent channels: a 128 px
scene becomes the 16x16 latent the demo UNet takes), a UNet2DConditionModel with SD 1.5's block
types (CrossAttnDownBlock2D x3 + DownBlock2D, mid-block cross-attention, the mirror going up), a
CLIPTextModel trained with it from scratch, and a CLIPTokenizer whose vocabulary is the caption
words. Latent space rather than pixels so the demo is the same pipeline as SD (StableDiffusionPipeline
loads it; the board runs the same text encoder -> UNet -> decoder split) and its UNet sees the same
operators at the same latent sizes as the earlier demo.

Phases, each resumed from its last checkpoint in --work (a session may be cut off at any time):
  vae     autoencoder on 64 px crops of scenes (reconstruction + a small KL term)
  encode  a fixed set of scenes encoded to latents once (the UNet phase never runs the encoder)
  unet    UNet + text encoder on those latents: epsilon prediction, SD's noise schedule, min-SNR
          weighting, captions dropped 10 % of the time for classifier-free guidance, EMA weights
Seeded: the same --seed and step counts give the same weights on the same machine and thread count.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converter.models.demo import scenes  # noqa: E402

VAE_CONFIG = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [16, 32, 64, 64],
              "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
              "layers_per_block": 1, "norm_num_groups": 8, "sample_size": scenes.SIZE}
TEXT_WIDTH = 64
UNET_CONFIG = {"sample_size": scenes.SIZE // 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
               "block_out_channels": [32, 64, 96, 96],
               "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
               "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
               "cross_attention_dim": TEXT_WIDTH, "attention_head_dim": 4, "norm_num_groups": 16,
               "flip_sin_to_cos": True, "freq_shift": 0}
# Stable Diffusion 1.5's training noise schedule.
SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 77
# How the demo is evaluated (rkconvert.json): DDIM steps and classifier-free guidance.
EVAL_STEPS = 20
EVAL_GUIDANCE = 4.0


def build_tokenizer(folder: Path):
    """A CLIPTokenizer whose BPE merges spell every caption word as one token."""
    from transformers import CLIPTokenizer

    words = scenes.vocabulary()
    vocab: dict[str, int] = {}
    for ch in sorted({c for w in words for c in w}):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges = []
    # Each word is spelt left to right; longer words first, so that a shorter word's merge never
    # fires inside a longer one (BPE applies the lowest-ranked merge present first).
    for w in sorted(words, key=len, reverse=True):
        for length in range(2, len(w) + 1):
            left, right = w[:length - 1], w[length - 1] + ("</w>" if length == len(w) else "")
            if f"{left} {right}" not in merges:
                merges.append(f"{left} {right}")
                vocab.setdefault(left + right, len(vocab))
    vocab[BOS], vocab[EOS] = len(vocab), len(vocab) + 1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TOKENS)
    for w in words:
        ids = tokenizer(w, add_special_tokens=False).input_ids
        assert ids == [vocab[w + "</w>"]], (w, ids)
    return tokenizer


def text_encoder_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer.get_vocab()), hidden_size=TEXT_WIDTH,
                          intermediate_size=2 * TEXT_WIDTH, num_hidden_layers=2, num_attention_heads=4,
                          max_position_embeddings=MAX_TOKENS, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def scene_batch(rng: np.random.Generator, n: int) -> tuple[list[str], torch.Tensor]:
    """n random scenes: captions and images in [-1, 1], NCHW."""
    drawn = [scenes.random_scene(rng) for _ in range(n)]
    images = np.stack([scenes.draw(s, rng) for s in drawn]).astype(np.float32) / 127.5 - 1
    return [s.caption() for s in drawn], torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


class Checkpoint:
    """One phase's state in --work: saved atomically every --save-every steps, resumed on start."""

    def __init__(self, work: Path, phase: str):
        self.path = work / f"{phase}.pt"
        self.log = work / f"{phase}-loss.jsonl"

    def load(self):
        return torch.load(self.path, weights_only=False) if self.path.exists() else None

    def save(self, state: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)

    def record(self, row: dict) -> None:
        with self.log.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        """The loss log, one row per step: rows a killed run logged past its last checkpoint are replaced
        by the resumed run's."""
        if not self.log.exists():
            return []
        by_step = {row["step"]: row for row in map(json.loads, self.log.read_text().splitlines())}
        return [by_step[step] for step in sorted(by_step)]


def _lr(step: int, steps: int, peak: float, warmup: int = 200) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def train_loop(ckpt: Checkpoint, modules: dict, steps: int, peak_lr: float, seed: int, save_every: int, loss_fn,
               ema=None, log_every: int = 50) -> None:
    """The training loop both phases share: resume, step, log, checkpoint."""
    params = [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=peak_lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    step = 0
    state = ckpt.load()
    if state is not None:
        for name, m in modules.items():
            m.load_state_dict(state["modules"][name])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        step = state["step"]
        print(f"{ckpt.path.name}: resumed at step {step}", flush=True)
    started, window = time.time(), []
    while step < steps:
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, peak_lr)
        loss = loss_fn(rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema is not None:
            ema.update(step)
        step += 1
        window.append(loss.item())
        if step % log_every == 0 or step == steps:
            row = {"step": step, "loss": float(np.mean(window)), "lr": opt.param_groups[0]["lr"],
                   "seconds": round(time.time() - started, 1)}
            ckpt.record(row)
            print(f"{ckpt.path.stem} {json.dumps(row)}", flush=True)
            window = []
        if step % save_every == 0 or step == steps:
            ckpt.save({"modules": {n: m.state_dict() for n, m in modules.items()}, "opt": opt.state_dict(),
                       "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
                       "ema": ema.state_dict() if ema is not None else None})


class Ema:
    """Exponential moving average of parameters (the weights that ship). The decay warms up as
    (1 + step) / (10 + step), capped at `decay`, so the untrained start fades out of the average
    (with 0.999 from step 0, 37 % of it was still there at step 1000)."""

    def __init__(self, modules: dict, decay: float):
        self.modules, self.decay = modules, decay
        self.shadow = {f"{n}.{k}": p.detach().clone() for n, m in modules.items() for k, p in m.named_parameters()}

    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for n, m in self.modules.items():
                for k, p in m.named_parameters():
                    self.shadow[f"{n}.{k}"].lerp_(p, 1 - decay)

    def copy_to(self) -> None:
        with torch.no_grad():
            for n, m in self.modules.items():
                for k, p in m.named_parameters():
                    p.copy_(self.shadow[f"{n}.{k}"])

    def state_dict(self) -> dict:
        return self.shadow

    def load_state_dict(self, state: dict) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}


def train_vae(work: Path, steps: int, seed: int, save_every: int, batch: int = 16, crop: int = 64):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)

    def loss_fn(rng):
        _, images = scene_batch(rng, batch)
        y, x = rng.integers(0, scenes.SIZE - crop + 1, size=2) // 8 * 8
        images = images[:, :, y:y + crop, x:x + crop]
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample()).sample
        return F.mse_loss(recon, images) + 0.5 * F.l1_loss(recon, images) + 1e-6 * posterior.kl().mean()

    train_loop(Checkpoint(work, "vae"), {"vae": vae}, steps, 1e-3, seed, save_every, loss_fn)
    return vae.eval()


def encode_scenes(work: Path, vae, count: int, seed: int) -> dict:
    """`count` scenes encoded once: captions and latent means (unscaled)."""
    path = work / "latents.pt"
    if path.exists():
        return torch.load(path)
    rng = np.random.default_rng(seed + 1)
    captions, latents = [], []
    with torch.no_grad():
        for start in range(0, count, 64):
            caps, images = scene_batch(rng, min(64, count - start))
            captions += caps
            latents.append(vae.encode(images).latent_dist.mean)
    data = {"captions": captions, "latents": torch.cat(latents)}
    torch.save(data, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    print(f"encoded {count} scenes: latent std {data['latents'].std():.3f}", flush=True)
    return data


def train_unet(work: Path, data: dict, tokenizer, scaling: float, steps: int, seed: int, save_every: int,
               batch: int = 64):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    text_encoder = CLIPTextModel(text_encoder_config(tokenizer))
    noise_schedule = DDPMScheduler(**{k: v for k, v in SCHEDULE.items() if k != "set_alpha_to_one"})
    alphas = noise_schedule.alphas_cumprod
    tokens = tokenizer(data["captions"] + [""], padding="max_length", max_length=MAX_TOKENS,
                       return_tensors="pt").input_ids
    latents = data["latents"] * scaling
    modules = {"unet": unet, "text_encoder": text_encoder}
    ema = Ema(modules, 0.999)

    def loss_fn(rng):
        idx = torch.from_numpy(rng.integers(0, len(latents), size=batch))
        ids = tokens[idx].clone()
        ids[torch.from_numpy(rng.random(batch) < 0.1)] = tokens[-1]  # the empty caption, for CFG
        x0 = latents[idx]
        noise = torch.randn_like(x0)
        t = torch.randint(0, len(alphas), (batch,))
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(xt, t, text_encoder(ids)[0]).sample
        snr = a.view(-1) / (1 - a.view(-1))
        weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 weighting for epsilon prediction
        return (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()

    train_loop(Checkpoint(work, "unet"), modules, steps, 1e-3, seed, save_every, loss_fn, ema=ema)
    ema.copy_to()
    return unet.eval(), text_encoder.eval()


def evaluation_spec(seed: int) -> tuple[dict, str]:
    """rkconvert.json (the evaluation set: 2 prompts of every layout, fixed noise seeds; the judge) and
    prompts.tsv (6 other prompts of every layout, for calibration), drawn from their own generators."""
    eval_rng, calib_rng = np.random.default_rng(seed + 100), np.random.default_rng(seed + 200)
    prompts = [{"category": layout, "prompt": scenes.scene_of_layout(layout, eval_rng).caption(), "seed": 1000 + i}
               for i, layout in enumerate(layout for layout in scenes.LAYOUTS for _ in range(2))]
    spec = {"evaluation": {"steps": EVAL_STEPS, "guidance_scale": EVAL_GUIDANCE, "prompts": prompts},
            "judge": "demo-scenes", "prompts": "prompts.tsv"}
    calibration = [f"{layout}\t{scenes.scene_of_layout(layout, calib_rng).caption()}"
                   for layout in scenes.LAYOUTS for _ in range(6)]
    return spec, "\n".join(calibration) + "\n"


def save_pipeline(out: Path, unet, vae, text_encoder, tokenizer, scaling: float, seed: int) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    vae.register_to_config(scaling_factor=scaling)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(**SCHEDULE), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    spec, calibration = evaluation_spec(seed)
    (tmp / "rkconvert.json").write_text(json.dumps(spec, indent=1) + "\n")
    (tmp / "prompts.tsv").write_text(calibration)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="checkpoints and loss logs (resumed from)")
    parser.add_argument("--out", type=Path, required=True, help="the diffusers pipeline folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=2500)
    parser.add_argument("--scenes", type=int, default=24000, help="scenes encoded for the UNet phase")
    parser.add_argument("--unet-steps", type=int, default=5000)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(args.work / "tokenizer")
    vae = train_vae(args.work, args.vae_steps, args.seed, args.save_every)
    data = encode_scenes(args.work, vae, args.scenes, args.seed)
    scaling = float(1 / data["latents"].std())
    unet, text_encoder = train_unet(args.work, data, tokenizer, scaling, args.unet_steps, args.seed, args.save_every)
    save_pipeline(args.out, unet, vae, text_encoder, tokenizer, scaling, args.seed)
    for phase in ("vae", "unet"):
        rows = Checkpoint(args.work, phase).rows()
        (args.out / f"train-{phase}-loss.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
