"""Every --model source loads into the real diffusers UNet with the weights it was given."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from converter.common.errors import UserError
from converter.models import presets
from converter.models.model_source import resolve
from tests.conftest import TINY_RESOLUTION, assert_same_unet, tiny_unet
from tools.make_pruned_unet import prune_unet


@pytest.fixture(scope="module")
def pruned():
    """A tiny UNet pruned by torch-pruning (Taylor importance), as the seed project pruned SD."""
    return prune_unet(tiny_unet(), ratio=0.25, resolution=TINY_RESOLUTION)


def test_presets_keep_their_architecture():
    sd21 = resolve("sd21:mini").load_unet()
    assert sd21.config.use_linear_projection
    assert isinstance(sd21.down_blocks[0].attentions[0].proj_in, torch.nn.Linear)
    assert [b.attentions[0].transformer_blocks[0].attn1.heads for b in sd21.down_blocks[:3]] == [5, 10, 20]
    assert sd21.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.in_features == 1024 // 16

    bk = resolve("bk-sdm-tiny:mini").load_unet()
    assert bk.mid_block is None
    assert [len(b.resnets) for b in bk.down_blocks] == [1, 1, 1, 1]

    sd15 = resolve("sd15:mini").load_unet()
    assert sd15.mid_block is not None and [len(b.resnets) for b in sd15.down_blocks] == [2, 2, 2, 2]
    full = presets.preset_config("sd15")
    assert [c // 8 for c in full["block_out_channels"]] == list(sd15.config.block_out_channels)


def test_presets_are_deterministic_per_seed():
    a, b, c = (resolve("sd15:mini", seed=s).load_unet() for s in (0, 0, 1))
    wa, wb, wc = (m.conv_in.weight.detach() for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_diffusers_folder_loads_the_same_weights(tiny_folder):
    assert_same_unet(resolve(str(tiny_folder)).load_unet(), tiny_unet())


def test_pruned_widths_come_from_the_weights(tmp_path, pruned):
    widths = {p.shape[0] for n, p in pruned.named_parameters() if n.endswith("conv1.weight")}
    assert any(w % 32 for w in widths), f"pruning left only multiples of 32: {widths}"
    folder = tmp_path / "pruned"
    folder.mkdir()
    tiny_unet().save_config(folder)  # the stock config, as torch-pruning users ship it
    save_file({k: v.contiguous() for k, v in pruned.state_dict().items()},
              folder / "diffusion_pytorch_model.safetensors")
    loaded = resolve(str(folder)).load_unet()
    assert_same_unet(loaded, pruned)
    assert sum(p.numel() for p in loaded.parameters()) < sum(p.numel() for p in tiny_unet().parameters())


def test_pruned_state_dict_file_with_config_beside_it(tmp_path, pruned):
    tiny_unet().save_config(tmp_path)
    torch.save(pruned.state_dict(), tmp_path / "pruned.pth")
    assert_same_unet(resolve(str(tmp_path / "pruned.pth")).load_unet(), pruned)


def test_pickled_module_needs_trust(tmp_path, pruned):
    path = tmp_path / "pruned.pth"
    torch.save(pruned, path)
    with pytest.raises(UserError, match="--trust-pickle"):
        resolve(str(path)).load_unet()
    assert_same_unet(resolve(str(path), trust_pickle=True).load_unet(), pruned)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    tiny_unet().save_config(tmp_path)
    state = tiny_unet().state_dict()
    state.pop("conv_in.weight")
    save_file(state, tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(UserError, match="1 missing .*conv_in.weight"):
        resolve(str(tmp_path)).load_unet()


def test_a_pipeline_saved_as_the_fp16_variant_alone_loads_as_float32(tmp_path, capsys):
    """As many published repositories ship it: only `*.fp16.safetensors` in unet/, text_encoder/ and vae/.
    Every model loads from it, in float32, with the half-precision weights it holds; the user is told."""
    from diffusers import StableDiffusionPipeline

    from converter.imaging.text_to_image import pipeline
    from converter.models import pipeline_models
    from tests.conftest import save_tiny_pipeline

    save_tiny_pipeline(tmp_path / "plain")
    plain = StableDiffusionPipeline.from_pretrained(tmp_path / "plain", local_files_only=True).to(torch.float16)
    plain.save_pretrained(tmp_path / "fp16", variant="fp16")
    assert not list((tmp_path / "fp16").rglob("diffusion_pytorch_model.safetensors"))
    capsys.readouterr()  # diffusers' progress bars
    source = resolve(str(tmp_path / "fp16"))
    assert capsys.readouterr().err == (f"rkconvert: {tmp_path / 'fp16'}: the fp16 variant's weights alone in unet, "
                                       "text_encoder, vae; read as float32\n")
    unet = source.load_unet()
    assert_same_unet(unet, plain.unet.float())
    drawn = pipeline(tmp_path / "fp16", unet)
    assert {p.dtype for m in (drawn.text_encoder, drawn.vae) for p in m.parameters()} == {torch.float32}
    for model, reference in ((drawn.vae, plain.vae), (drawn.text_encoder, plain.text_encoder)):
        assert all(torch.equal(p, q.float()) for p, q in zip(model.parameters(), reference.parameters()))
    traced = pipeline_models.export(tmp_path / "fp16", TINY_RESOLUTION, tmp_path / "traced")
    assert traced["latent_shape"] == [1, 4, TINY_RESOLUTION // 8, TINY_RESOLUTION // 8]
    capsys.readouterr()
    resolve(str(tmp_path / "plain"))
    assert capsys.readouterr().err == ""
