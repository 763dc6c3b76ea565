"""Distil an LCM-LoRA for the demo model on this machine's CPU, from the demo's own UNet.

    .venv/bin/python tools/distill_lcm_lora.py --work /tmp/lcm-distill --out converter/models/demo/lcm-lora

Latent consistency distillation as LCM-LoRA does it (Luo et al. 2023; diffusers' train_lcm_distill_lora
example): the teacher is the demo UNet with classifier-free guidance at the demo's own scale, stepped by a
DDIM solver over 50 of the 1000 training timesteps; the student is the same UNet with a LoRA on its
attention, feed-forward, convolution and time-embedding layers (the teacher is the student with its adapter
switched off), trained so that its consistency function (boundary scalings c_skip and c_out, timestep
scale 10, as LCMScheduler draws) gives the same clean latent from a noisy latent at t and from the solver's
step to t - 20. The target is the student itself without gradient: a LoRA has no EMA copy. Huber loss
(c = 0.001). Only the LoRA trains; the text encoder and the VAE are the demo's, frozen.

The LoRA is saved in diffusers' format (pytorch_lora_weights.safetensors) with the loss log, and judged
(distill-eval.json): the demo's evaluation prompts drawn by LCMScheduler in 1, 2 and 4 steps without
guidance, with the LoRA and without it (the demo's scenes are simple enough that its own UNet, drawn by
LCMScheduler, already passes at 4 steps: the LoRA shows at fewer). Resumed from its
last checkpoint in --work; seeded like tools/train_demo.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converter.models import demo  # noqa: E402
from converter.models.demo.judge import judge  # noqa: E402
from tools.train_demo import MAX_TOKENS, Checkpoint, encode_scenes, train_loop  # noqa: E402

SOLVER_STEPS = 50  # DDIM timesteps the teacher steps between (LCMScheduler's original_inference_steps)
TIMESTEP_SCALING = 10.0  # LCMScheduler's default: the boundary scalings see 10 t
SIGMA_DATA = 0.5
HUBER_C = 0.001
LORA_LAYERS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
               "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]
EVAL_STEPS = (1, 2, 4)
LORA_FILE = "pytorch_lora_weights.safetensors"


def boundary_scalings(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """c_skip and c_out of the consistency function at timestep t (1 and 0 at t = 0)."""
    scaled = TIMESTEP_SCALING * t.float()
    c_skip = SIGMA_DATA ** 2 / (scaled ** 2 + SIGMA_DATA ** 2)
    c_out = scaled / (scaled ** 2 + SIGMA_DATA ** 2) ** 0.5
    return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1)


class Distillation:
    """The demo's models, the noise schedule and the DDIM solver's timesteps, and the loss of one batch."""

    def __init__(self, work: Path, scenes: int, seed: int, rank: int, guidance: float, batch: int):
        from diffusers import StableDiffusionPipeline
        from peft import LoraConfig

        pipe = StableDiffusionPipeline.from_pretrained(demo.pipeline_folder(), safety_checker=None)
        self.pipe, self.unet, self.batch = pipe, pipe.unet, batch
        for model in (pipe.unet, pipe.text_encoder, pipe.vae):
            model.requires_grad_(False)
        data = encode_scenes(work, pipe.vae, scenes, seed)
        self.latents = data["latents"] * pipe.vae.config.scaling_factor
        self.tokens = pipe.tokenizer(data["captions"], padding="max_length", max_length=MAX_TOKENS,
                                     return_tensors="pt").input_ids
        with torch.no_grad():
            empty = pipe.tokenizer([""], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt")
            self.unconditional = pipe.text_encoder(empty.input_ids)[0]
        torch.manual_seed(seed)
        self.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                         target_modules=LORA_LAYERS))
        alphas = pipe.scheduler.alphas_cumprod
        self.alpha, self.sigma = alphas.sqrt(), (1 - alphas).sqrt()
        self.skip = len(alphas) // SOLVER_STEPS
        self.solver_t = torch.arange(1, SOLVER_STEPS + 1) * self.skip - 1
        self.solver_prev_alpha = torch.cat([alphas[:1], alphas[self.solver_t[:-1]]])
        self.w = guidance - 1  # LCM's w: x0 = cond + w (cond - uncond)

    def _x0(self, eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (x - self.sigma[t].view(-1, 1, 1, 1) * eps) / self.alpha[t].view(-1, 1, 1, 1)

    def _consistency(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        c_skip, c_out = boundary_scalings(t)
        return c_skip * x + c_out * self._x0(self.unet(x, t, text).sample, x, t)

    def loss(self, rng: np.random.Generator) -> torch.Tensor:
        idx = torch.from_numpy(rng.integers(0, len(self.latents), size=self.batch))
        with torch.no_grad():
            text = self.pipe.text_encoder(self.tokens[idx])[0]
        x0 = self.latents[idx]
        index = torch.from_numpy(rng.integers(0, SOLVER_STEPS, size=self.batch))
        start = self.solver_t[index]
        end = (start - self.skip).clamp(min=0)
        noisy = self.alpha[start].view(-1, 1, 1, 1) * x0 + self.sigma[start].view(-1, 1, 1, 1) * torch.randn_like(x0)
        prediction = self._consistency(noisy, start, text)
        with torch.no_grad():
            self.unet.disable_adapters()
            eps = self.unet(torch.cat([noisy, noisy]), torch.cat([start, start]),
                            torch.cat([text, self.unconditional.expand_as(text)])).sample
            self.unet.enable_adapters()
            cond, uncond = eps.chunk(2)
            x0_cond, x0_uncond = self._x0(cond, noisy, start), self._x0(uncond, noisy, start)
            guided_eps = cond + self.w * (cond - uncond)
            guided_x0 = x0_cond + self.w * (x0_cond - x0_uncond)
            a_prev = self.solver_prev_alpha[index].view(-1, 1, 1, 1)
            stepped = a_prev.sqrt() * guided_x0 + (1 - a_prev).sqrt() * guided_eps
            target = self._consistency(stepped, end, text)
        return (torch.sqrt((prediction - target) ** 2 + HUBER_C ** 2) - HUBER_C).mean()

    def save_lora(self, out: Path) -> Path:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        out.mkdir(parents=True, exist_ok=True)
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(self.unet))
        StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True)
        return out / LORA_FILE


def evaluate(lora: Path) -> dict:
    """The demo's evaluation prompts drawn by LCMScheduler in 1, 2 and 4 steps without guidance, by the demo
    UNet alone and with `lora` fused; the judge's prompt accuracy of each."""
    from diffusers import LCMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(demo.pipeline_folder(), safety_checker=None)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    prompts = json.loads((demo.PIPELINE / "rkconvert.json").read_text())["evaluation"]["prompts"]

    def accuracy(steps: int) -> float:
        passed = 0
        for p in prompts:
            image = pipe(p["prompt"], num_inference_steps=steps, guidance_scale=1.0, output_type="np",
                         generator=torch.Generator().manual_seed(p["seed"])).images[0]
            passed += judge((image * 255).round().astype(np.uint8), p["prompt"]).ok
        return passed / len(prompts)

    without = {steps: accuracy(steps) for steps in EVAL_STEPS}
    pipe.load_lora_weights(str(lora))
    pipe.fuse_lora()
    return {"lcm_steps": list(EVAL_STEPS), "guidance_scale": 1.0, "prompts": len(prompts),
            "accuracy_without_lora": without, "accuracy_with_lora": {steps: accuracy(steps) for steps in EVAL_STEPS}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="checkpoints and loss log (resumed from)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the LoRA, its loss log and judgement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=8000, help="scenes encoded once for distillation")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--guidance", type=float, default=None, help="the teacher's (default: the demo's)")
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    guidance = args.guidance or json.loads((demo.PIPELINE / "rkconvert.json").read_text())["evaluation"][
        "guidance_scale"]
    run = Distillation(args.work, args.scenes, args.seed, args.rank, guidance, args.batch)
    ckpt = Checkpoint(args.work, "lcm-lora")
    train_loop(ckpt, {"unet": run.unet}, args.steps, args.lr, args.seed, args.save_every, run.loss)
    lora = run.save_lora(args.out)
    (args.out / "distill-loss.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ckpt.rows()))
    result = {"teacher_guidance": guidance, "rank": args.rank, "steps": args.steps, "batch": args.batch,
              "seed": args.seed, **evaluate(lora)}
    (args.out / "distill-eval.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {lora}; prompt accuracy by LCM steps without the LoRA {result['accuracy_without_lora']}, "
          f"with it {result['accuracy_with_lora']}", flush=True)


if __name__ == "__main__":
    main()
