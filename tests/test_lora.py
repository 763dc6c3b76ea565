"""--lora: a LoRA made with peft, saved in the diffusers (PEFT keys) and kohya / A1111 layouts, fused into a tiny
pipeline's UNet and text encoder before export; the .rknn checked against it; a LoRA that does not fit refused in
one line with nothing written."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from converter.common import onnx_runtime
from tests.conftest import as_numpy, error_lines, rkconvert, save_tiny_pipeline, tiny_unet, torch_output, unet_inputs

RANK = 4
SCALE = 0.8
# kohya files carry each layer's alpha (the update is scaled by alpha / rank): one other than the rank shows
# it is read. The diffusers layout keeps none, so its LoRA is made with alpha = rank.
KOHYA_ALPHA = 2.0
UNET_LAYERS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
TEXT_LAYERS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def _adapt(model, layers: list[str], alpha: float, seed: int) -> dict:
    """`model` with a peft LoRA on `layers` whose up matrices are random (peft starts them at zero): its
    LoRA state dict (PEFT keys)."""
    from peft import LoraConfig, get_peft_model_state_dict

    model.add_adapter(LoraConfig(r=RANK, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=layers))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    return get_peft_model_state_dict(model)


def _scaled(model, scale: float):
    """The adapted `model` as diffusers fuses it at `scale`."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.set_scale("default", scale)
    return model.eval()


def _kohya(unet_layers: dict, text_layers: dict, alpha: float) -> dict:
    from diffusers.utils import convert_state_dict_to_kohya

    made = {}
    for prefix, layers in (("lora_unet_", unet_layers), ("lora_te_", text_layers)):
        for key, value in (convert_state_dict_to_kohya(layers) if layers else {}).items():
            made[prefix + key] = torch.tensor(alpha) if key.endswith(".alpha") else value.contiguous()
    return made


def _text_ids() -> torch.Tensor:
    return torch.arange(77).remainder(90)[None]


def _pipeline_models(folder: Path):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    return (UNet2DConditionModel.from_pretrained(folder / "unet").eval(),
            CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32).eval())


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    """A tiny pipeline, its LoRA in both layouts, and what the adapted UNet and text encoder compute at SCALE:
    (work folder, {layout: file}, UNet inputs, reference UNet output, reference text states, base outputs)."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    work = tmp_path_factory.mktemp("lora")
    save_tiny_pipeline(work / "tiny-pipeline")
    files, expected = {}, {}
    for layout, alpha in (("diffusers", RANK), ("kohya", KOHYA_ALPHA)):
        unet, encoder = _pipeline_models(work / "tiny-pipeline")
        unet_layers, text_layers = _adapt(unet, UNET_LAYERS, alpha, 1), _adapt(encoder, TEXT_LAYERS, alpha, 2)
        if layout == "diffusers":
            StableDiffusionPipeline.save_lora_weights(work / layout, unet_lora_layers=unet_layers,
                                                      text_encoder_lora_layers=text_layers, safe_serialization=True)
            files[layout] = work / layout / "pytorch_lora_weights.safetensors"
        else:
            files[layout] = work / "kohya-style.safetensors"
            save_file(_kohya(unet_layers, text_layers, alpha), files[layout])
        inputs = unet_inputs(unet)
        with torch.no_grad():
            expected[layout] = (torch_output(_scaled(unet, SCALE), inputs),
                                _scaled(encoder, SCALE)(_text_ids()).last_hidden_state.numpy())
    unet, encoder = _pipeline_models(work / "tiny-pipeline")
    with torch.no_grad():
        base = (torch_output(unet, inputs), encoder(_text_ids()).last_hidden_state.numpy())
    return work, files, inputs, expected, base


def _relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("layout", ["diffusers", "kohya"])
def test_each_layout_fuses_to_what_peft_computes(loras, layout, tmp_path, monkeypatch):
    from converter.models.lora import Lora
    from converter.models.model_source import resolve

    work, files, inputs, expected, base = loras
    monkeypatch.setenv("RKCONVERT_CACHE", str(tmp_path))
    source = resolve(str(work / "tiny-pipeline"), loras=(Lora.parse(f"{files[layout]}:{SCALE}"),))
    # diffusers names every LoRA file pytorch_lora_weights: its folder names it.
    assert source.name == {"diffusers": "tiny-pipeline+diffusers", "kohya": "tiny-pipeline+kohya-style"}[layout]
    unet, encoder = _pipeline_models(source.path)
    with torch.no_grad():
        got = (torch_output(unet, inputs), encoder(_text_ids()).last_hidden_state.numpy())
    for fused, wanted, without in zip(got, expected[layout], base):
        assert _relative(fused, wanted) <= 1e-5  # float32 sums in another order
        assert _relative(without, wanted) >= 1e-2  # the LoRA changes what the model computes
    # The pipeline's other files are the base's: its evaluation set, the tokenizer the board reads.
    for name in ("rkconvert.json", "tokenizer/tokenizer.json", "vae/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json"):
        assert (source.path / name).read_bytes() == (work / "tiny-pipeline" / name).read_bytes()
    # Fused once: the same LoRA at the same scale is read from the cache.
    again = resolve(str(work / "tiny-pipeline"), loras=(Lora.parse(f"{files[layout]}:{SCALE}"),))
    assert again.path == source.path and again.fingerprint() == source.fingerprint()


def test_an_lcm_lora_is_drawn_by_lcm_in_4_steps_without_guidance(loras, tmp_path, monkeypatch, capsys):
    """Named as latent-consistency ships one: its pipeline's scheduler becomes LCMScheduler and its evaluation is
    drawn in 4 steps without guidance; what the image check, generate and the bundle's runner draw by default."""
    from diffusers import LCMScheduler, StableDiffusionPipeline

    from converter.imaging.evaluation import default_drawing
    from converter.models.lora import Lora
    from converter.models.model_source import resolve

    work, files, *_ = loras
    lcm = tmp_path / "lcm-lora-tiny" / "pytorch_lora_weights.safetensors"
    lcm.parent.mkdir()
    shutil.copy(files["diffusers"], lcm)
    monkeypatch.setenv("RKCONVERT_CACHE", str(tmp_path / "cache"))
    source = resolve(str(work / "tiny-pipeline"), loras=(Lora.parse(str(lcm)),))
    assert source.name == "tiny-pipeline+lcm-lora-tiny"
    assert ("fusing pytorch_lora_weights.safetensors (an LCM-LoRA by its name: drawn by LCMScheduler in 4 steps)"
            in capsys.readouterr().err)
    assert isinstance(StableDiffusionPipeline.from_pretrained(source.path).scheduler, LCMScheduler)
    base_evaluation = json.loads((work / "tiny-pipeline" / "rkconvert.json").read_text())["evaluation"]
    evaluation = json.loads((source.path / "rkconvert.json").read_text())["evaluation"]
    assert evaluation == {**base_evaluation, "steps": 4, "guidance_scale": 1.0}
    assert default_drawing(source.path, embedded_guidance=False) == (4, 1.0)
    # A pipeline that declares no evaluation (a single file's) draws as its scheduler usually does.
    for folder, drawn in ((source.path, (4, 1.0)), (work / "tiny-pipeline", (20, 7.5))):
        bare = shutil.copytree(folder, tmp_path / f"bare-{folder.name}",
                               ignore=shutil.ignore_patterns("rkconvert.json"))
        assert default_drawing(bare, embedded_guidance=False) == drawn


@pytest.fixture(scope="module")
def lora_build(loras):
    work, files, *_ = loras
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RKCONVERT_CACHE", str(work / "cache"))
        result = rkconvert("build", "--target", "rk3588", "--model", "tiny-pipeline", "--lora",
                           f"{files['kohya']}:{SCALE}", "--resolution", "64", "--npu-models", "none",
                           "--layer-report", "off", "--image-check", "off", cwd=work)
    return result, work / "build" / f"tiny-pipeline+{files['kohya'].stem}-rk3588"


def test_the_rknn_is_checked_against_the_fused_unet_and_names_the_lora(loras, lora_build):
    work, files, inputs, expected, _ = loras
    result, out = lora_build
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["loras"] == [{"file": files["kohya"].name, "scale": SCALE,
                                "sha256": hashlib.sha256(files["kohya"].read_bytes()).hexdigest()}]
    assert report["output_psnr_db"] >= 60
    session = onnx_runtime.session(out / "stages" / "export" / "model.onnx")
    got = onnx_runtime.run(session, as_numpy(inputs))["out_sample"]
    assert _relative(got, expected["kohya"][0]) <= 1e-4
    assert re.search(rf"LoRAs fused +{files['kohya'].name} at {SCALE:g} \(sha256 [0-9a-f]{{12}}\)", result.stdout)


def test_the_bundle_names_the_lora(loras, lora_build, tmp_path):
    from converter.board.manifest import LoraUsed, Manifest

    files = loras[1]
    result, out = lora_build
    assert result.returncode == 0, result.stderr
    released = rkconvert("release", str(out), "--out", str(tmp_path / "lora.tar.gz"), cwd=tmp_path)
    assert released.returncode == 0, released.stderr
    with tarfile.open(tmp_path / "lora.tar.gz", "r:gz") as tar:
        manifest = Manifest.loads(tar.extractfile("lora/manifest.json").read())
    assert manifest.loras == [LoraUsed(files["kohya"].name, hashlib.sha256(files["kohya"].read_bytes()).hexdigest(),
                                       SCALE)]


def _other_lora(folder: Path, **other) -> Path:
    """A kohya LoRA made on a tiny UNet of another shape."""
    from safetensors.torch import save_file

    lora = folder / "other.safetensors"
    save_file(_kohya(_adapt(tiny_unet(**other), UNET_LAYERS, RANK, 3), {}, RANK), lora)
    return lora


def test_a_lora_for_another_base_is_refused_in_one_line_with_nothing_written(loras, tmp_path, monkeypatch):
    work = loras[0]
    lora = _other_lora(tmp_path, cross_attention_dim=48)
    monkeypatch.setenv("RKCONVERT_CACHE", str(tmp_path / "cache"))
    result = rkconvert("build", "--target", "rk3588", "--model", str(work / "tiny-pipeline"), "--lora", str(lora),
                       "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    fusing, error = result.stderr.strip().splitlines()
    assert fusing.startswith(f"rkconvert: fusing {lora.name} into ")
    assert error == (f"rkconvert: error: {lora}: widths differ from this model's (unet.down_blocks.0.attentions.0."
                     "transformer_blocks.0.attn2.to_k is 32 wide, the LoRA's 48): a LoRA for another base "
                     "(SD 1.x / 2.x / XL)?")
    assert not (tmp_path / "out").exists()
    assert list((tmp_path / "cache" / "derived").iterdir()) == []


def test_a_lora_for_another_architecture_names_a_layer_the_model_lacks(loras, tmp_path, monkeypatch):
    from converter.common.errors import UserError
    from converter.models.lora import Lora
    from converter.models.model_source import resolve

    lora = _other_lora(tmp_path, layers_per_block=2)
    monkeypatch.setenv("RKCONVERT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError) as refused:
        resolve(str(loras[0] / "tiny-pipeline"), loras=(Lora.parse(str(lora)),))
    assert str(refused.value).endswith("layer(s) it changes are not in this model, e.g. "
                                       "unet.down_blocks.0.attentions.1.proj_in: a LoRA for another architecture?")
    assert list((tmp_path / "cache" / "derived").iterdir()) == []
