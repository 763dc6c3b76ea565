"""How a converted UNet's images are judged: the evaluation set its model brings, image PSNR and
SSIM of the `.rknn`'s images against the reference's, and prompt accuracy where the model has a judge.

A pipeline folder declares its evaluation in `rkconvert.json`:
  {"evaluation": {"steps": 20, "guidance_scale": 5.0,
                  "prompts": [{"category": "left", "prompt": "a red circle on the left", "seed": 1}, ...]},
   "judge": "demo-scenes"}
"demo-scenes" is the only judge so far (converter/models/demo/judge.py, for the demo's drawn scenes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from calib_data.schedules import default_for
from converter.common.errors import UserError

SPEC_FILE = "rkconvert.json"


@dataclass(frozen=True)
class EvalPrompt:
    category: str
    prompt: str
    seed: int


@dataclass(frozen=True)
class EvalSet:
    prompts: tuple[EvalPrompt, ...]
    steps: int
    guidance_scale: float
    judge: str | None

    def fingerprint(self) -> dict:
        return {"prompts": [p.__dict__ for p in self.prompts], "steps": self.steps,
                "guidance_scale": self.guidance_scale, "judge": self.judge}


def _spec(folder: Path) -> dict | None:
    path = folder / SPEC_FILE
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable evaluation spec ({type(e).__name__}: {e})") from None
    if not isinstance(spec, dict):
        raise UserError(f"{path}: not a readable evaluation spec (expected a JSON object)")
    return spec


# What `--image-check on` draws for a pipeline that declares no set (a single-file checkpoint): two everyday
# prompts, few steps (the check compares the .rknn's images with the reference's, not their quality).
GENERIC = EvalSet((EvalPrompt("generic", "a photograph of an astronaut riding a horse", 0),
                   EvalPrompt("generic", "a red apple on a wooden table", 1)), steps=4, guidance_scale=7.5, judge=None)


def eval_set(folder: Path) -> EvalSet | None:
    """The evaluation set a pipeline folder declares, or None if it declares none."""
    spec = _spec(folder)
    if spec is None or "evaluation" not in spec:
        return None
    try:
        ev = spec["evaluation"]
        prompts = tuple(EvalPrompt(p.get("category", ""), p["prompt"], int(p["seed"])) for p in ev["prompts"])
        return EvalSet(prompts, int(ev["steps"]), float(ev["guidance_scale"]), spec.get("judge"))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{folder / SPEC_FILE}: not a readable evaluation spec ({type(e).__name__}: {e})") from None


def default_drawing(folder: Path, embedded_guidance: bool) -> tuple[int, float]:
    """(steps, guidance scale) a pipeline folder is drawn with unless told otherwise: its declared evaluation's,
    else what its scheduler usually draws with (4 LCM steps, or 20 at guidance 7.5); `embedded_guidance`: its
    UNet takes the guidance scale as an embedding (LCM-distilled)."""
    declared = eval_set(folder)
    if declared:
        return declared.steps, declared.guidance_scale
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
    schedule = replace(default_for(scheduler), embedded_guidance=embedded_guidance)
    return schedule.steps, schedule.drawn_guidance


def declared_prompts(folder: Path) -> Path | None:
    """The prompt file a pipeline folder declares for calibration (rkconvert.json "prompts"), if any."""
    spec = _spec(folder)
    return folder / spec["prompts"] if spec and spec.get("prompts") else None


def judge_for(name: str | None):
    """judge(image, prompt) -> (ok, why), or None when the model has no judge."""
    if name is None:
        return None
    if name == "demo-scenes":
        from converter.models.demo.judge import judge

        def demo_scenes(image: np.ndarray, prompt: str) -> tuple[bool, str]:
            verdict = judge(image, prompt)
            return verdict.ok, verdict.why

        return demo_scenes
    raise UserError(f"unknown image judge '{name}' (known: demo-scenes)")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of uint8 images, peak 255; inf when identical."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of uint8 RGB images (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03),
    averaged over the channels."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        mx, my = gaussian_filter(x, 1.5), gaussian_filter(y, 1.5)
        vx = gaussian_filter(x * x, 1.5) - mx * mx
        vy = gaussian_filter(y * y, 1.5) - my * my
        cov = gaussian_filter(x * y, 1.5) - mx * my
        values.append(np.mean((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))
    return float(np.mean(values))


def compare_images(reference: np.ndarray, converted: np.ndarray, prompts: list[str], judge) -> dict:
    """Per image and overall: PSNR, SSIM, and (with a judge) whether each image shows its prompt."""
    rows = []
    for i, prompt in enumerate(prompts):
        row = {"prompt": prompt, "psnr_db": psnr(converted[i], reference[i]), "ssim": ssim(converted[i], reference[i])}
        if judge:
            row["reference_ok"], row["reference_why"] = judge(reference[i], prompt)
            row["rknn_ok"], row["rknn_why"] = judge(converted[i], prompt)
        rows.append(row)
    finite = [r["psnr_db"] for r in rows if np.isfinite(r["psnr_db"])]
    summary = {"images": len(rows), "psnr_db_mean": float(np.mean(finite)) if finite else float("inf"),
               "psnr_db_min": min(r["psnr_db"] for r in rows), "ssim_mean": float(np.mean([r["ssim"] for r in rows]))}
    if judge:
        ref_acc = float(np.mean([r["reference_ok"] for r in rows]))
        rknn_acc = float(np.mean([r["rknn_ok"] for r in rows]))
        summary.update(reference_prompt_accuracy=ref_acc, rknn_prompt_accuracy=rknn_acc,
                       prompt_accuracy_kept=rknn_acc / ref_acc if ref_acc else None)
    return {"summary": summary, "rows": rows}
