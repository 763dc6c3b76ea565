"""Does an image show what its caption asked for? A deterministic judge for the demo's scenes.

The stand-in for a CLIP score: for every object the caption names, the judge looks in the window
around that position for a blob of the asked colour (pixels nearer to it than to any other colour of
the palette), and asks whether the blob is the asked shape (best overlap with a circle, square or
triangle fitted to its bounding box) of a plausible size at the right place. When the caption names
the background, the image's border must be mostly that colour. An image passes when everything
asked for is found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from converter.models.demo import scenes

PALETTE_NAMES = (*scenes.COLOURS, *(f"bg:{b}" for b in scenes.BACKGROUNDS))
PALETTE = np.array([*scenes.COLOURS.values(), *scenes.BACKGROUNDS.values()], np.float32)
MAX_COLOUR_DISTANCE = 90.0  # RGB distance past which a pixel is no palette colour at all
WINDOW = 30  # half the side of the search window around an object's position
AREA = ((scenes.HALF_SIZE[0] * 2) ** 2 * 0.5 * 0.6, (scenes.HALF_SIZE[1] * 2) ** 2 * 1.35)  # triangle.. square
MAX_OFFSET = 12  # pixels between the blob's centre and the asked position
MIN_SHAPE_IOU = 0.72
BACKGROUND_SHARE = 0.6


@dataclass(frozen=True)
class Verdict:
    ok: bool
    why: str  # what was missing, or "" when everything was found


def _templates(h: int, w: int) -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    circle = ((y - cy) / (h / 2)) ** 2 + ((x - cx) / (w / 2)) ** 2 <= 1
    # Upright triangle: apex at the top centre, base along the bottom edge.
    triangle = np.abs(x - cx) <= (y + 0.5) / h * (w / 2)
    return {"circle": circle, "square": np.ones((h, w), bool), "triangle": triangle}


def shape_of(mask: np.ndarray) -> tuple[str, float]:
    """The shape whose template, fitted to the mask's bounding box, overlaps it best, and that overlap."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    scores = {}
    for name, template in _templates(*crop.shape).items():
        scores[name] = (crop & template).sum() / (crop | template).sum()
    best = max(scores, key=scores.get)
    return best, float(scores[best])


def colour_labels(image: np.ndarray) -> np.ndarray:
    """Per pixel, the index of the nearest palette colour, or -1 when none is near."""
    dist = np.linalg.norm(image.astype(np.float32)[..., None, :] - PALETTE, axis=-1)
    labels = dist.argmin(axis=-1)
    labels[dist.min(axis=-1) > MAX_COLOUR_DISTANCE] = -1
    return labels


def _find(labels: np.ndarray, thing: scenes.Thing) -> str:
    cx, cy = scenes.CENTRES[thing.position]
    y0, x0 = max(cy - WINDOW, 0), max(cx - WINDOW, 0)
    window = labels[y0:cy + WINDOW, x0:cx + WINDOW] == PALETTE_NAMES.index(thing.colour)
    blobs, count = ndimage.label(window)
    if count == 0:
        return f"no {thing.colour} {_where(thing)}"
    sizes = ndimage.sum(window, blobs, range(1, count + 1))
    blob = blobs == int(np.argmax(sizes)) + 1
    area = int(blob.sum())
    if not AREA[0] <= area <= AREA[1]:
        return f"the {thing.colour} blob {_where(thing)} has {area} px, not an object's size"
    by, bx = ndimage.center_of_mass(blob)
    if max(abs(by + y0 - cy), abs(bx + x0 - cx)) > MAX_OFFSET:
        return f"the {thing.colour} blob is not {_where(thing)}"
    shape, iou = shape_of(blob)
    if shape != thing.shape or iou < MIN_SHAPE_IOU:
        return f"the {thing.colour} blob {_where(thing)} is no {thing.shape} (looks like a {shape}, overlap {iou:.2f})"
    return ""


def _where(thing: scenes.Thing) -> str:
    return scenes.PHRASES[thing.position]


def judge(image: np.ndarray, caption: str) -> Verdict:
    """Judge a uint8 RGB image (scenes.SIZE square) against a caption of the scene grammar."""
    asked = scenes.parse(caption)
    labels = colour_labels(image)
    for thing in asked.things:
        why = _find(labels, thing)
        if why:
            return Verdict(False, why)
    if asked.background is not None:
        border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        share = (border == PALETTE_NAMES.index(f"bg:{asked.background}")).mean()
        if share < BACKGROUND_SHARE:
            return Verdict(False, f"the background is not {asked.background} ({share:.0%} of the border)")
    return Verdict(True, "")
