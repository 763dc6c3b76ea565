"""The text encoder whose states the UNet cross-attends to: a local CLIP folder, or a tiny seeded one.

The tiny one (character-level vocabulary, 2 transformer layers, seeded weights) gives text states of
the right shape and a realistic spread for models without their real encoder at hand: nothing is
downloaded. Its states are not those of the real CLIP, which a calibration set for deployment needs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from converter.common.errors import UserError
from converter.common.weight_variant import variant

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def tiny(hidden_size: int, seed: int):
    """(tokenizer, text encoder) of the transformers CLIP classes, with seeded weights."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {}
    for code in range(33, 127):
        for piece in (chr(code), chr(code) + "</w>"):
            vocab[piece] = len(vocab)
    vocab[BOS], vocab[EOS] = len(vocab), len(vocab) + 1
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"),
                                  model_max_length=77)
    heads = next(h for h in (8, 4, 2, 1) if hidden_size % h == 0)
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                            num_hidden_layers=2, num_attention_heads=heads, max_position_embeddings=77,
                            bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])
    torch.manual_seed(seed)
    return tokenizer, CLIPTextModel(config).eval()


def from_folder(folder: Path):
    """A diffusers pipeline folder (tokenizer/ + text_encoder/) or a folder holding both."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tok_dir = folder / "tokenizer" if (folder / "tokenizer").is_dir() else folder
    enc_dir = folder / "text_encoder" if (folder / "text_encoder").is_dir() else folder
    try:
        return (CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True),
                CLIPTextModel.from_pretrained(enc_dir, local_files_only=True, variant=variant(enc_dir),
                                              dtype=torch.float32).eval())  # transformers 5: else the file's
    except (OSError, ValueError) as e:
        raise UserError(f"--text-encoder {folder}: not a CLIP tokenizer + text encoder ({str(e).splitlines()[0]})") from None
