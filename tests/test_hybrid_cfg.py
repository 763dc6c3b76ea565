"""Marking layers float16 in the toolkit's hybrid config leaves every quantization parameter as step1 wrote it."""

from __future__ import annotations

from ruamel.yaml import YAML

from converter.toolkit.worker import keep_float16

# The toolkit's own layout (hybrid_quantization_step1, 2.5.0), with a scale in exponent form as the
# full-size SD 1.5 UNet's softmax outputs have them.
PARAMETERS = """quantize_parameters:
    onnx::MatMul_6096:
        qtype: asym
        qmethod: layer
        dtype: int8
        min:
        -   0.0
        max:
        -   0.0031492505222558975
        scale:
        -   1.2350002048062343e-05
        zero_point:
        -   -128
    /down_blocks.0/attentions.0/transformer_blocks.0/attn1/MatMul_1_2sdpa_q_softmax:
        qtype: asym
        scale:
        -   5.960464477539063e-08
"""


def test_only_the_custom_layers_change(tmp_path):
    cfg = tmp_path / "model.quantization.cfg"
    cfg.write_text("custom_quantize_layers: {}\n" + PARAMETERS)
    softmax = "/down_blocks.0/attentions.0/transformer_blocks.0/attn1/MatMul_1_2sdpa_q_softmax"
    assert keep_float16(cfg, ["onnx::MatMul_6096", softmax, "/not/in/the/config", softmax]) == 2
    text = cfg.read_text()
    assert text.endswith("\n" + PARAMETERS)  # byte for byte: step2 refuses any changed digit
    data = YAML(typ="safe").load(text)
    assert data["custom_quantize_layers"] == {"onnx::MatMul_6096": "float16", softmax: "float16"}
    assert data["quantize_parameters"]["onnx::MatMul_6096"]["scale"] == [1.2350002048062343e-05]


def test_no_known_layer_leaves_the_config_as_it_was(tmp_path):
    cfg = tmp_path / "model.quantization.cfg"
    original = "custom_quantize_layers: {}\n" + PARAMETERS
    cfg.write_text(original)
    assert keep_float16(cfg, ["/not/in/the/config"]) == 0
    assert cfg.read_text() == original
