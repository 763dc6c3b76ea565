"""The other models of a text-to-image pipeline beside its UNet, as ONNX: the CLIP text encoder (token ids ->
hidden states), the VAE decoder (latents -> image in [-1, 1]) and the VAE encoder (image -> latents, to redraw a
picture: `moments`, an AutoencoderKL's mean and standard deviation stacked on channels, from which the sampler's
generator draws the latents as diffusers' img2img does; an AutoencoderTiny's latents themselves). Traced once per build (stage
`pipeline-models`) with the TorchScript exporter, as the UNet is; the build makes each a `.rknn` too
(builds/npu_models.py), and the board runs either form (onnxruntime on its CPU with --cpu-models)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from converter.common.errors import UserError
from converter.common.quiet_loading import quiet
from converter.common.weight_variant import variant
from converter.models.family import TEXT_ENCODER, TEXT_TOKENS, VAE_DECODER, VAE_ENCODER, VAE_SCALE
from converter.models.tracing import OPSET


class _Encode(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids):
        return self.encoder(input_ids, return_dict=False)[0]


class _Decode(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode(latents, return_dict=False)[0]


class _EncodeImage(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        encoded = self.vae.encode(image, return_dict=True)
        if hasattr(encoded, "latent_dist"):
            return torch.cat([encoded.latent_dist.mean, encoded.latent_dist.std], dim=1)
        return encoded.latents


def load_vae(pipeline: Path):
    """The pipeline's VAE, of the class its config names (an AutoencoderTiny put in by --vae, else AutoencoderKL)."""
    import diffusers

    kind = json.loads((pipeline / "vae" / "config.json").read_text()).get("_class_name", "AutoencoderKL")
    return getattr(diffusers, kind).from_pretrained(pipeline / "vae", local_files_only=True,
                                                    variant=variant(pipeline / "vae")).float().eval()


def export(pipeline: Path, resolution: int, out: Path) -> dict:
    """Write TEXT_ENCODER.onnx, VAE_DECODER.onnx and VAE_ENCODER.onnx into `out`; returns what the board loop needs
    to know of the pipeline (latent shape, the VAE's scaling factor)."""
    from transformers import CLIPTextModel

    with quiet():
        try:
            # float32 whatever the file holds: transformers 5 loads a model in its weights' dtype
            encoder = CLIPTextModel.from_pretrained(pipeline / "text_encoder", local_files_only=True,
                                                    dtype=torch.float32, variant=variant(pipeline / "text_encoder")).eval()
            vae = load_vae(pipeline)
        except (OSError, ValueError) as e:
            raise UserError(f"{pipeline}: no text encoder and VAE to ship ({str(e).splitlines()[0]})") from None
    latent = [1, vae.config.latent_channels, resolution // VAE_SCALE, resolution // VAE_SCALE]
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Encode(encoder), (torch.zeros(1, TEXT_TOKENS, dtype=torch.int64),),
                          str(out / f"{TEXT_ENCODER}.onnx"), input_names=["input_ids"], output_names=["hidden_states"],
                          opset_version=OPSET, dynamo=False)
        torch.onnx.export(_Decode(vae), (torch.zeros(latent),), str(out / f"{VAE_DECODER}.onnx"),
                          input_names=["latents"], output_names=["image"], opset_version=OPSET, dynamo=False)
        torch.onnx.export(_EncodeImage(vae), (torch.zeros(1, 3, resolution, resolution),),
                          str(out / f"{VAE_ENCODER}.onnx"), input_names=["image"], output_names=["moments"],
                          opset_version=OPSET, dynamo=False)
    return {"latent_shape": latent, "vae_scaling_factor": vae.config.scaling_factor}
