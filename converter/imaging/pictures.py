"""PNGs a person looks at: the amplified difference of two images, and the comparison grid (reference |
.rknn | difference, one captioned row per prompt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DIFFERENCE_GAIN = 4
COLUMNS = ("reference (ORT)", ".rknn (simulator)", f"difference x{DIFFERENCE_GAIN}")
_GAP = 4
_LINE = 13  # px per caption line at the default font's size


def difference(a: np.ndarray, b: np.ndarray, gain: int = DIFFERENCE_GAIN) -> np.ndarray:
    """|a - b| amplified `gain` times, as an image."""
    return np.clip(np.abs(a.astype(np.int16) - b.astype(np.int16)) * gain, 0, 255).astype(np.uint8)


def _wrapped(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> list[str]:
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if lines[-1] and draw.textlength(candidate, font=font) > width:
            lines.append(word)
        else:
            lines[-1] = candidate
    return lines


def comparison_grid(reference: np.ndarray, converted: np.ndarray, captions: list[str]) -> np.ndarray:
    """One row per image: its caption above reference | converted | difference, column titles on top.
    Pictures are judged by people, so every row says what it was asked to show."""
    h, w = reference.shape[1:3]
    width = 3 * w + 2 * _GAP
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrapped(measure, c, width, font) for c in captions]
    title = max(len(_wrapped(measure, t, w, font)) for t in COLUMNS) * _LINE
    height = title + sum(len(lines) * _LINE + h + _GAP for lines in wrapped)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(COLUMNS):
        draw.multiline_text((j * (w + _GAP), 0), "\n".join(_wrapped(measure, name, w, font)), fill="black",
                            font=font, spacing=_LINE - 11)
    y = title
    for i, lines in enumerate(wrapped):
        draw.multiline_text((0, y), "\n".join(lines), fill=(60, 60, 60), font=font, spacing=_LINE - 11)
        y += len(lines) * _LINE
        for j, image in enumerate((reference[i], converted[i], difference(reference[i], converted[i]))):
            canvas.paste(Image.fromarray(image), (j * (w + _GAP), y))
        y += h + _GAP
    return np.asarray(canvas)


def save_png(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(image).save(tmp, format="PNG")
    tmp.replace(path)
