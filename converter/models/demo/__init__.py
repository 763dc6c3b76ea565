"""The built-in demo: a small text-to-image model trained here on drawn scenes (tools/train_demo.py).

`pipeline/` is a diffusers StableDiffusionPipeline folder (UNet, CLIP text encoder and tokenizer,
AutoencoderKL, DDIM scheduler) with its training loss logs; `scenes` is the world it was trained
on, `judge` tells whether an image shows what its caption asked for.
"""

from __future__ import annotations

from pathlib import Path

from converter.common.digest import file_sha256
from converter.common.errors import UserError

PIPELINE = Path(__file__).with_name("pipeline")
# sha256 of every weights file as trained (tools/train_demo.py --seed 0); a git-lfs pointer, a partial
# checkout or an edited file is refused rather than built.
WEIGHTS_SHA256 = {
    "unet/diffusion_pytorch_model.safetensors": "fc2a5b69c57974e1d4d4fc62d806b6ffa9d910f58afa3d1e5fc7b633e9a71f60",
    "vae/diffusion_pytorch_model.safetensors": "c7a1d70c6116b1301ba92207c482e68125cda949b141de52626993c834e4e270",
    "text_encoder/model.safetensors": "cb804438180ce6c3552dddda74f7efea0eb47a19fc5fcf42f0a553253fcc65a0",
}


def pipeline_folder() -> Path:
    """The shipped pipeline folder, after checking its weights are the trained ones."""
    for rel, expected in WEIGHTS_SHA256.items():
        path = PIPELINE / rel
        if not path.is_file():
            raise UserError(f"{path}: missing from the demo model (is the checkout complete?)")
        if file_sha256(path) != expected:
            raise UserError(f"{path}: not the trained demo weights (sha256 differs; a git-lfs pointer or an "
                            "edited file?)")
    return PIPELINE
