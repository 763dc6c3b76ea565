"""CLIP's BPE tokenizer read from a `tokenizer.json` (the tokenizers format diffusers pipelines ship),
in plain Python: the board has no transformers. Gives what StableDiffusionPipeline feeds the text
encoder: start token, the prompt's ids, end token, padded with the pad id to the model's length
(77), the prompt truncated so the end token stays.

The pre-tokenizer's `\\p{L}` / `\\p{N}` classes are spelled for Python's `re` (letters `[^\\W\\d_]`,
digits `\\d`): identical for the prompts these models are given (checked against transformers'
CLIPTokenizer on the demo's vocabulary and on byte-level text), different only for numerals such
as "²" that `\\d` does not count as digits.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

PIECES = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+")


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (the ByteLevel pre-tokenizer's)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


BYTES = _byte_to_unicode()


class ClipTokenizer:
    def __init__(self, path: Path, length: int = 77):
        spec = json.loads(Path(path).read_text())
        model = spec["model"]
        if model.get("type") != "BPE":
            raise ValueError(f"{path}: a {model.get('type')} tokenizer; this reader knows CLIP's BPE")
        self.vocab: dict[str, int] = model["vocab"]
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.suffix = model.get("end_of_word_suffix") or ""
        special = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
        self.bos, self.eos = special["<|startoftext|>"], special["<|endoftext|>"]
        self.unk = self.vocab.get(model.get("unk_token"), self.eos)
        self.pad = (spec.get("padding") or {}).get("pad_id", self.eos)
        self.length = length
        self.cache: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        """The `length` token ids for `text`, as the pipeline pads and truncates them."""
        text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).lower()
        ids = [i for piece in PIECES.findall(text) for i in self._word(piece)]
        ids = [self.bos, *ids[:self.length - 2], self.eos]
        return ids + [self.pad] * (self.length - len(ids))

    def _word(self, piece: str) -> list[int]:
        if piece in ("<|startoftext|>", "<|endoftext|>"):
            return [self.bos if piece == "<|startoftext|>" else self.eos]
        if piece not in self.cache:
            symbols = [BYTES[b] for b in piece.encode("utf-8")]
            symbols[-1] += self.suffix
            self.cache[piece] = [self.vocab.get(s, self.unk) for s in self._merge(symbols)]
        return self.cache[piece]

    def _merge(self, symbols: list[str]) -> list[str]:
        while len(symbols) > 1:
            pairs = {(a, b): self.ranks.get((a, b)) for a, b in zip(symbols, symbols[1:])}
            best = min((p for p, r in pairs.items() if r is not None), key=pairs.get, default=None)
            if best is None:
                return symbols
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols
