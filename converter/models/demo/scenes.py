"""The demo model's world: captioned scenes of coloured shapes, drawn procedurally.

A scene is one object somewhere (left, right, top, bottom, center) or two objects side by side
(left and right) or stacked (top and bottom), on a plain background, with a caption in words:
"a red circle on the left and a blue square on the right on a gray background". The training
data, the evaluation prompts and the judge of generated images all read the layout from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128  # pixels; the demo's VAE makes a 16x16 latent of it, as SD 1.5 makes 64x64 of 512

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 225), "yellow": (245, 210, 20),
           "purple": (150, 40, 185)}
BACKGROUNDS = {"white": (240, 240, 240), "gray": (120, 120, 120), "black": (15, 15, 15)}
SHAPES = ("circle", "square", "triangle")
# Centre of an object at each position, in pixels; the drawing jitters it by up to JITTER.
CENTRES = {"left": (32, 64), "right": (96, 64), "top": (64, 32), "bottom": (64, 96), "center": (64, 64)}
PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
           "center": "in the center"}
PAIRS = (("left", "right"), ("top", "bottom"))
HALF_SIZE = (17, 22)  # half the side of an object's bounding box, drawn uniformly from this range
JITTER = 4


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str
    position: str

    def words(self) -> str:
        return f"a {self.colour} {self.shape} {PHRASES[self.position]}"


@dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]
    background: str
    says_background: bool = True  # whether the caption names the background

    def caption(self) -> str:
        text = " and ".join(t.words() for t in self.things)
        return f"{text} on a {self.background} background" if self.says_background else text


def vocabulary() -> list[str]:
    """Every word a caption can use, in a fixed order."""
    words = ["a", "and", "on", "background", *COLOURS, *SHAPES, *BACKGROUNDS]
    for phrase in PHRASES.values():
        words += [w for w in phrase.split() if w not in words]
    return list(dict.fromkeys(words))


LAYOUTS = {**{p: (p,) for p in CENTRES}, **{" and ".join(pair): pair for pair in PAIRS}}


def scene_of_layout(layout: str, rng: np.random.Generator) -> Scene:
    """A random scene with the objects of one layout ("left", ..., "left and right", "top and bottom")."""
    things = tuple(Thing(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), p) for p in LAYOUTS[layout])
    return Scene(things, str(rng.choice(list(BACKGROUNDS))), says_background=bool(rng.random() < 0.8))


def random_scene(rng: np.random.Generator) -> Scene:
    def thing(position: str) -> Thing:
        return Thing(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), position)

    if rng.random() < 0.4:
        things = (thing(str(rng.choice(list(CENTRES)))),)
    else:
        things = tuple(thing(p) for p in PAIRS[rng.integers(len(PAIRS))])
    return Scene(things, str(rng.choice(list(BACKGROUNDS))), says_background=bool(rng.random() < 0.8))


def draw(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The scene as uint8 RGB (SIZE, SIZE, 3), edges antialiased (drawn at 4x, then downsampled)."""
    scale = 4
    image = Image.new("RGB", (SIZE * scale, SIZE * scale), BACKGROUNDS[scene.background])
    pen = ImageDraw.Draw(image)
    for thing in scene.things:
        cx, cy = (c + rng.integers(-JITTER, JITTER + 1) for c in CENTRES[thing.position])
        h = rng.integers(HALF_SIZE[0], HALF_SIZE[1] + 1)
        box = [(cx - h) * scale, (cy - h) * scale, (cx + h) * scale, (cy + h) * scale]
        fill = COLOURS[thing.colour]
        if thing.shape == "circle":
            pen.ellipse(box, fill=fill)
        elif thing.shape == "square":
            pen.rectangle(box, fill=fill)
        else:
            pen.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2, box[1])], fill=fill)
    return np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BOX))


_THING = re.compile(rf"a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) ({'|'.join(PHRASES.values())})")
_BACKGROUND = re.compile(rf" on a ({'|'.join(BACKGROUNDS)}) background$")


def parse(caption: str) -> Scene:
    """The scene a caption asks for (background None when the caption leaves it open); ValueError if
    the caption is not in the scene grammar."""
    text = caption.strip()
    match = _BACKGROUND.search(text)
    background = match.group(1) if match else None
    body = text[:match.start()] if match else text
    position_of = {v: k for k, v in PHRASES.items()}
    parts = body.split(" and ")
    things = []
    for part in parts:
        m = _THING.fullmatch(part)
        if not m:
            raise ValueError(f"not a demo scene caption: {caption!r}")
        things.append(Thing(m.group(1), m.group(2), position_of[m.group(3)]))
    return Scene(tuple(things), background, says_background=background is not None)
