"""PNG writing and reading with the standard library and numpy (the board has no Pillow): 8-bit RGB written;
8-bit RGB or RGBA, grey or grey with alpha, not interlaced, read (what image tools save by default)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def save_png(path: Path, rgb: np.ndarray) -> None:
    """An (H, W, 3) uint8 image as an 8-bit RGB PNG."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 6))
                           + _chunk(b"IEND", b""))


SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples a pixel: grey, RGB, grey + alpha, RGBA


class PngError(ValueError):
    """A file this reader cannot read: one line naming it and why."""


def load_png(path: Path) -> np.ndarray:
    """The (H, W, 3) uint8 RGB picture of a PNG (alpha dropped, grey repeated)."""
    data = Path(path).read_bytes()
    if not data.startswith(SIGNATURE):
        raise PngError(f"{path}: not a PNG file")
    chunks, at = {}, len(SIGNATURE)
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        chunks.setdefault(kind, []).append(data[at + 8:at + 8 + length])
        at += 12 + length
    if b"IHDR" not in chunks or b"IDAT" not in chunks:
        raise PngError(f"{path}: a PNG without its header or image data")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    if depth != 8 or colour not in CHANNELS or interlace:
        raise PngError(f"{path}: a {depth}-bit PNG of colour type {colour}{', interlaced' if interlace else ''}; "
                       "this runner reads 8-bit grey, RGB and RGBA, not interlaced (save it so)")
    bpp = CHANNELS[colour]
    try:
        raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    except zlib.error as e:
        raise PngError(f"{path}: damaged image data ({e})") from None
    if len(raw) != height * (width * bpp + 1):
        raise PngError(f"{path}: image data of {len(raw)} bytes, not {height} rows of {width} pixels")
    rows = np.frombuffer(raw, np.uint8).reshape(height, width * bpp + 1)
    pixels = np.zeros((height, width * bpp), np.uint8)
    previous = np.zeros(width * bpp, np.uint8)
    for y in range(height):
        pixels[y] = previous = _unfiltered(int(rows[y, 0]), rows[y, 1:], previous, bpp, path)
    picture = pixels.reshape(height, width, bpp)
    return np.repeat(picture[..., :1], 3, axis=2) if bpp < 3 else np.ascontiguousarray(picture[..., :3])


def _unfiltered(kind: int, row: np.ndarray, above: np.ndarray, bpp: int, path: Path) -> np.ndarray:
    """A row's bytes from its filtered form (PNG's five filters, each on the byte a pixel to the left and above)."""
    if kind == 0:
        return row.copy()
    if kind == 2:
        return row + above  # uint8: modulo 256
    if kind == 1:
        return (np.cumsum(row.reshape(-1, bpp), axis=0, dtype=np.int64) % 256).astype(np.uint8).ravel()
    if kind not in (3, 4):
        raise PngError(f"{path}: filter type {kind} (PNG has 0 to 4)")
    made = np.zeros(len(row), np.int64)
    up = above.astype(np.int64)
    for x in range(0, len(row), bpp):
        left = made[x - bpp:x] if x else np.zeros(bpp, np.int64)
        if kind == 3:
            made[x:x + bpp] = (row[x:x + bpp] + (left + up[x:x + bpp]) // 2) % 256
            continue
        corner = up[x - bpp:x] if x else np.zeros(bpp, np.int64)
        estimate = left + up[x:x + bpp] - corner
        to_left, to_up, to_corner = (np.abs(estimate - v) for v in (left, up[x:x + bpp], corner))
        nearest = np.where((to_left <= to_up) & (to_left <= to_corner), left,
                           np.where(to_up <= to_corner, up[x:x + bpp], corner))
        made[x:x + bpp] = (row[x:x + bpp] + nearest) % 256
    return made.astype(np.uint8)
