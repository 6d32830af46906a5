"""Style images made by code: built-in presets that need no download and no licence.

Each generator is deterministic for a (size, seed) pair and returns a square RGB image.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PALETTES = {
    "mosaic": [(27, 60, 115), (214, 164, 56), (176, 58, 46), (236, 226, 198), (46, 117, 93), (92, 52, 110)],
    "brushstrokes": [(18, 40, 92), (43, 88, 160), (240, 204, 80), (250, 236, 170), (30, 30, 40), (96, 140, 190)],
    "swirls": [(12, 20, 60), (40, 70, 150), (230, 190, 60), (245, 240, 210), (120, 160, 210)],
}


def _mosaic(size: int, rng: np.random.Generator) -> Image.Image:
    """Voronoi tiles in a small palette, separated by dark grout."""
    n = max(24, size * size // 1800)
    points = rng.uniform(0, size, (n, 2)).astype(np.float32)
    colours = np.array(PALETTES["mosaic"], dtype=np.float32)[rng.integers(0, 6, n)]
    colours *= rng.uniform(0.85, 1.15, (n, 1)).astype(np.float32)  # a little variation per tile
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    pixels = np.stack([xx.ravel(), yy.ravel()], 1)
    nearest = np.empty(len(pixels), dtype=np.int64)
    gap = np.empty(len(pixels), dtype=np.float32)
    for start in range(0, len(pixels), 65536):  # chunks bound the distance matrix's memory
        chunk = pixels[start:start + 65536]
        d = ((chunk[:, None, :] - points[None, :, :]) ** 2).sum(-1)
        two = np.partition(d, 1, axis=1)[:, :2]
        nearest[start:start + len(chunk)] = d.argmin(1)
        gap[start:start + len(chunk)] = np.sqrt(two[:, 1]) - np.sqrt(two[:, 0])
    image = colours[nearest]
    image[gap < max(1.5, size / 200)] = (35, 30, 28)
    return Image.fromarray(image.reshape(size, size, 3).clip(0, 255).astype(np.uint8), "RGB")


def _brushstrokes(size: int, rng: np.random.Generator) -> Image.Image:
    """Short thick strokes that follow a smooth flow field, in an impressionist palette."""
    palette = PALETTES["brushstrokes"]
    image = Image.new("RGB", (size, size), palette[0])
    draw = ImageDraw.Draw(image)
    length, width = size / 18, max(2, size // 64)
    for _ in range(size * size // 60):
        x, y = rng.uniform(0, size, 2)
        angle = np.sin(x / size * 6.0) * 1.6 + np.cos(y / size * 5.0) * 1.2
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=palette[rng.integers(0, len(palette))], width=width)
    return image.filter(ImageFilter.SMOOTH)


def _swirls(size: int, rng: np.random.Generator) -> Image.Image:
    """Bands of colour wound around a few vortices."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    phase = np.zeros_like(xx)
    for cx, cy in rng.uniform(0, 1, (4, 2)):
        r = np.hypot(xx - cx, yy - cy) + 0.05
        # An integer winding number keeps the bands continuous across arctan2's branch cut.
        phase += int(rng.integers(2, 5)) * np.arctan2(yy - cy, xx - cx) + 6.0 * np.sin(9 * r) / (1 + 4 * r)
    palette = np.array(PALETTES["swirls"], dtype=np.float32)
    t = (np.sin(phase) + 1) / 2 * (len(palette) - 1)
    low = np.floor(t).astype(int)
    high = np.minimum(low + 1, len(palette) - 1)
    frac = (t - low)[..., None]
    image = palette[low] * (1 - frac) + palette[high] * frac
    return Image.fromarray(image.clip(0, 255).astype(np.uint8), "RGB")


GENERATORS: dict[str, Callable[[int, np.random.Generator], Image.Image]] = {
    "mosaic": _mosaic,
    "brushstrokes": _brushstrokes,
    "swirls": _swirls,
}
NAMES: tuple[str, ...] = tuple(GENERATORS)


def generate(name: str, size: int = 512, seed: int = 0) -> Image.Image:
    """A `size` x `size` RGB style image; KeyError for an unknown name."""
    if name not in GENERATORS:
        raise KeyError(f"unknown procedural style {name!r}; known: {', '.join(NAMES)}")
    if not 8 <= size <= 4096:
        raise ValueError(f"size must be between 8 and 4096, got {size}")
    return GENERATORS[name](size, np.random.default_rng(seed))
