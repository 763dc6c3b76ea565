"""CLIP's BPE tokenizer for a pipeline that brings no tokenizer folder (a single-file checkpoint).

The vocabulary is OpenAI's `bpe_simple_vocab_16e6.txt.gz` as the open_clip_torch wheel ships it (the package
SD 2.x's text encoder comes from; on this machine's local index, MIT licensed). It is read as a data file and
never imported: open_clip's own import pulls torchvision and timm, which rkconvert does not install. The
token table is CLIP's own construction (simple_tokenizer.py): the 256 byte symbols, each again with `</w>`,
the first 48894 merges, then the two markers: 49408 tokens, what SD 1.x and 2.x's text encoders embed.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import tempfile
from pathlib import Path

from converter.common.errors import UserError

VOCABULARY_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
TOKENS = 77


def vocabulary_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    path = Path(next(iter(spec.submodule_search_locations))) / VOCABULARY_FILE if spec else None
    if path is None or not path.is_file():
        raise UserError(f"CLIP's BPE vocabulary ({VOCABULARY_FILE}) comes from the open_clip_torch package, "
                        "which is not installed: run `make setup`")
    return path


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte, in CLIP's order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def save_tokenizer(folder: Path, pad_token: str) -> None:
    """Write a transformers CLIPTokenizer (tokenizer.json, the format the board runner reads) into `folder`.
    SD 1.x pads with the end marker, SD 2.x (OpenCLIP) with token 0, "!"."""
    from transformers import CLIPTokenizer

    lines = gzip.decompress(vocabulary_path().read_bytes()).decode("utf-8").split("\n")
    merges = lines[1:MERGES + 1]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges] + [BOS, EOS]
    with tempfile.TemporaryDirectory() as scratch:
        vocab, merge_file = Path(scratch) / "vocab.json", Path(scratch) / "merges.txt"
        vocab.write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
        merge_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tokenizer = CLIPTokenizer(str(vocab), str(merge_file), pad_token=pad_token, model_max_length=TOKENS)
    tokenizer.save_pretrained(folder)
