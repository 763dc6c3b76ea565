"""A pipeline folder derived from another: LoRAs fused into its UNet and text encoder (lora.py), its VAE replaced
(vae_swap.py), what its UNet predicts set where its file cannot say (`--prediction-type`: an SD 2.x single file
is read as epsilon-predicting, its 768-px models predict v); with an LCM-LoRA, drawn by LCMScheduler. Written
once per base and set of changes (each file's path, size and time; each LoRA's scale) under the cache, to a
temporary name renamed at the end (an interrupted run leaves nothing a later one takes for finished); the models
changed are saved, the base's other files (the tokenizer.json the board reads,
rkconvert.json's evaluation) linked. Every stage then reads it as it reads any pipeline folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from calib_data.schedules import default_for
from converter.common.quiet_loading import quiet
from converter.models.lora import Lora, fuse
from converter.models.single_file import cache_root
from converter.models.vae_swap import Vae

FORMAT = 2  # bump when the folder written here changes, so cached folders are written again
INDEX = "model_index.json"
SCHEDULER = "scheduler/scheduler_config.json"
EVALUATION = "rkconvert.json"


def derived_folder(base: Path, base_identity: str, name: str, loras: tuple[Lora, ...], vae: Vae | None,
                   prediction_type: str | None = None) -> Path:
    """The pipeline folder of `base` (`name` in the cache) with `loras` fused, `vae` in place of its own and its
    scheduler config's `prediction_type`, written on first use."""
    key = hashlib.sha256(json.dumps([base_identity, [lora.identity for lora in loras],
                                     vae.identity if vae else None, prediction_type, FORMAT]).encode())
    folder = cache_root() / "derived" / f"{name}-{key.hexdigest()[:12]}"
    if (folder / INDEX).is_file():
        return folder
    lcm = any(lora.lcm for lora in loras)
    named = [lora.path.name + (" (an LCM-LoRA by its name: drawn by LCMScheduler in 4 steps)" if lora.lcm else "")
             for lora in loras]
    changes = ([f"fusing {', '.join(named)}"] if loras else []) + \
        ([f"the VAE {vae.path.name}"] if vae else []) + ([f"{prediction_type} prediction"] if prediction_type else [])
    print(f"rkconvert: {' and '.join(changes)} into {base} (once; kept in {folder})", file=sys.stderr, flush=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as tmp, quiet():
        models = {**(fuse(base, loras) if loras else {}), **({"vae": vae.load(base)} if vae else {})}
        shutil.copytree(base, tmp, dirs_exist_ok=True, copy_function=_link_or_copy,
                        ignore=lambda where, names: list(models) if Path(where) == base else [])
        for part, model in models.items():
            model.save_pretrained(Path(tmp) / part, safe_serialization=True)
        if vae:
            _rewrite(Path(tmp) / INDEX, vae=["diffusers", vae.kind])
        if prediction_type:
            _rewrite(Path(tmp) / SCHEDULER, prediction_type=prediction_type)
        if lcm:
            _draw_as_lcm(Path(tmp))
        shutil.rmtree(folder, ignore_errors=True)
        Path(tmp).rename(folder)
    return folder


def _draw_as_lcm(folder: Path) -> None:
    """An LCM-LoRA's pipeline: LCMScheduler, and the evaluation it declares drawn as LCM draws (4 steps, no
    guidance), so the image check, `generate` and the bundle's runner all draw it so by default."""
    lcm = default_for("LCMScheduler")
    _rewrite(folder / INDEX, scheduler=["diffusers", lcm.scheduler])
    _rewrite(folder / SCHEDULER, _class_name=lcm.scheduler)
    spec = folder / EVALUATION
    declared = json.loads(spec.read_text()) if spec.is_file() else {}
    if "evaluation" in declared:
        _rewrite(spec, evaluation={**declared["evaluation"], "steps": lcm.steps,
                                   "guidance_scale": lcm.guidance_scale})


def _rewrite(path: Path, **changes) -> None:
    """A JSON file of the folder with `changes`, written anew (not through the link to the base's)."""
    made = {**json.loads(path.read_text()), **changes}
    path.unlink()
    path.write_text(json.dumps(made, indent=1))


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
