"""Synthetic RGB datasets shipped as code (nothing to download): rendered shapes and glyphs.

Both are harder than the bundled digits on purpose: 24-26 classes, some of which overlap (a
hexagon and an octagon, an O and a Q are a few pixels apart at 32x32), drawn with a random colour
on a random gradient background, at a random pose (position, size, rotation), with clutter lines
and pixel noise. ``synth_glyphs`` is also imbalanced (6x between its largest and smallest class).

Generation is seeded and deterministic (a fixed seed per dataset: the data never changes; the
``data.seed`` of params.yaml only drives the split) and takes a few seconds: every image is a mask
drawn with Pillow at 4x the size, box-filtered down (anti-aliasing), then coloured with numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lau.errors import BadInput

SUPERSAMPLE = 4  # masks are drawn at 4x the size, then box-filtered down
DEFAULT_SIZE = 24  # small on purpose: every benchmark trains on two shared CPU cores
SHAPES_SEED, GLYPHS_SEED = 20240513, 20240514
SHAPES_PER_CLASS = 200
GLYPHS_MAX_PER_CLASS, GLYPHS_MIN_PER_CLASS = 300, 50
GLYPH_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
               "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf")
GLYPH_NAMES = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")

Polygon = list[tuple[float, float]]  # vertices in units of the shape's radius, origin at its centre
Parts = list[tuple[Polygon, bool]]  # polygons drawn in order: True fills, False cuts a hole


def _regular(n: int, phase: float = 0.0) -> Polygon:
    """A regular n-gon of radius 1, first vertex at the top (rotated by ``phase`` radians)."""
    return [(math.sin(phase + 2 * math.pi * i / n), -math.cos(phase + 2 * math.pi * i / n)) for i in range(n)]


def _star(n: int, inner: float) -> Polygon:
    outer = _regular(n)
    inner_points = [(inner * x, inner * y) for x, y in _regular(n, math.pi / n)]
    return [p for pair in zip(outer, inner_points) for p in pair]


def _ellipse(aspect: float, n: int = 48) -> Polygon:
    return [(math.cos(t), aspect * math.sin(t)) for t in np.linspace(0, 2 * math.pi, n, endpoint=False)]


def _rect(width: float, height: float) -> Polygon:
    return [(-width, -height), (width, -height), (width, height), (-width, height)]


def _scaled(polygon: Polygon, factor: float) -> Polygon:
    return [(factor * x, factor * y) for x, y in polygon]


def _rotated(polygon: Polygon, angle: float) -> Polygon:
    c, s = math.cos(angle), math.sin(angle)
    return [(c * x - s * y, s * x + c * y) for x, y in polygon]


def _heart(n: int = 48) -> Polygon:
    points = [(16 * math.sin(t) ** 3, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t)
                                         - math.cos(4 * t))) for t in np.linspace(0, 2 * math.pi, n, endpoint=False)]
    return [(x / 17.0, (y + 2.0) / 17.0) for x, y in points]


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


# Each shape class: rng -> polygons in units of the radius, canonical orientation. The pose
# (rotation within +-25 degrees, size, position) is drawn by the caller for every class alike.
SHAPES: dict[str, Callable[[np.random.Generator], Parts]] = {
    "triangle": lambda rng: [(_regular(3), True)],
    "square": lambda rng: [(_regular(4, math.pi / 4), True)],
    "diamond": lambda rng: [(_rhombus(_u(rng, 0.6, 0.85)), True)],
    "pentagon": lambda rng: [(_regular(5), True)],
    "hexagon": lambda rng: [(_regular(6), True)],
    "octagon": lambda rng: [(_regular(8, math.pi / 8), True)],
    "circle": lambda rng: [(_ellipse(1.0), True)],
    "ellipse": lambda rng: [(_ellipse(_u(rng, 0.55, 0.75)), True)],
    "rectangle": lambda rng: [(_rect(0.9, 0.9 * _u(rng, 0.45, 0.7)), True)],
    "bar": lambda rng: [(_rect(1.0, _u(rng, 0.14, 0.24)), True)],
    "star4": lambda rng: [(_star(4, _u(rng, 0.35, 0.5)), True)],
    "star5": lambda rng: [(_star(5, _u(rng, 0.4, 0.55)), True)],
    "star6": lambda rng: [(_star(6, _u(rng, 0.45, 0.6)), True)],
    "star8": lambda rng: [(_star(8, _u(rng, 0.5, 0.65)), True)],
    "plus": lambda rng: _cross(_u(rng, 0.28, 0.38), 0.0),
    "x_cross": lambda rng: _cross(_u(rng, 0.28, 0.38), math.pi / 4),
    "ring": lambda rng: [(_ellipse(1.0), True), (_scaled(_ellipse(1.0), _u(rng, 0.5, 0.7)), False)],
    "hollow_square": lambda rng: [(_regular(4, math.pi / 4), True),
                                  (_scaled(_regular(4, math.pi / 4), _u(rng, 0.5, 0.7)), False)],
    "hollow_triangle": lambda rng: [(_regular(3), True), (_scaled(_regular(3), _u(rng, 0.45, 0.6)), False)],
    "crescent": lambda rng: [(_ellipse(1.0), True),
                             ([(x + _u(rng, 0.35, 0.55), y) for x, y in _scaled(_ellipse(1.0), 0.9)], False)],
    "semicircle": lambda rng: [([(math.cos(t), -math.sin(t) + 0.4) for t in np.linspace(0, math.pi, 25)], True)],
    "trapezoid": lambda rng: [([(-1.0, 0.55), (1.0, 0.55), (_u(rng, 0.35, 0.55), -0.55),
                                (-_u(rng, 0.35, 0.55), -0.55)], True)],
    "arrow": lambda rng: [([(-1.0, -0.2), (0.2, -0.2), (0.2, -0.55), (1.0, 0.0), (0.2, 0.55), (0.2, 0.2),
                            (-1.0, 0.2)], True)],
    "heart": lambda rng: [(_heart(), True)],
}
SHAPE_NAMES = tuple(SHAPES)


def _rhombus(aspect: float) -> Polygon:
    return [(0.0, -1.0), (aspect, 0.0), (0.0, 1.0), (-aspect, 0.0)]


def _cross(width: float, angle: float) -> Parts:
    return [(_rotated(_rect(1.0, width), angle), True), (_rotated(_rect(width, 1.0), angle), True)]


# ------------------------------------------------------------------ drawing and colouring


def _shape_mask(parts: Parts, size: int, centre: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """A float mask in [0, 1] of (size, size): the parts posed, drawn at 4x and box-filtered down."""
    big = size * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = centre[0] * SUPERSAMPLE, centre[1] * SUPERSAMPLE
    for polygon, fill in parts:
        points = [(cx + radius * SUPERSAMPLE * x, cy + radius * SUPERSAMPLE * y) for x, y in _rotated(polygon, angle)]
        draw.polygon(points, fill=255 if fill else 0)
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def _glyph_mask(char: str, font_path: Path, size: int, centre: tuple[float, float], height: float,
                angle: float) -> np.ndarray:
    big = size * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    font = _font(str(font_path), max(int(height * SUPERSAMPLE), 4))
    ImageDraw.Draw(canvas).text((big / 2, big / 2), char, fill=255, font=font, anchor="mm")
    canvas = canvas.rotate(math.degrees(-angle), resample=Image.BILINEAR,
                           translate=((centre[0] - size / 2) * SUPERSAMPLE, (centre[1] - size / 2) * SUPERSAMPLE))
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


@lru_cache(maxsize=64)
def _font(path: str, pixels: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, pixels)


def _clutter_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """0-2 thin random lines (drawn under the shape)."""
    lines = int(rng.integers(0, 3))
    if not lines:
        return np.zeros((size, size), dtype=np.float32)
    big = size * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(lines):
        x0, y0, x1, y1 = rng.uniform(0, big, 4)
        draw.line([(x0, y0), (x1, y1)], fill=255, width=int(rng.integers(2, 5)))
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def _colours(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background, foreground (at least 70 luma levels apart) and clutter colours, (n, 3) in 0-255."""
    luma = np.array([0.299, 0.587, 0.114])
    background, foreground = rng.uniform(0, 255, (n, 3)), rng.uniform(0, 255, (n, 3))
    low = np.abs((foreground - background) @ luma) < 70
    while low.any():  # redraw the foregrounds too close to their background
        foreground[low] = rng.uniform(0, 255, (int(low.sum()), 3))
        low = np.abs((foreground - background) @ luma) < 70
    return background, foreground, rng.uniform(0, 255, (n, 3))


def _compose(rng: np.random.Generator, masks: np.ndarray, clutter: np.ndarray) -> np.ndarray:
    """Gradient backgrounds, clutter, the coloured shapes, pixel noise: (N, H, W) masks -> uint8 (N, 3, H, W)."""
    n, size = masks.shape[0], masks.shape[-1]
    background, foreground, clutter_colour = _colours(rng, n)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    direction = rng.uniform(0, 2 * math.pi, n).astype(np.float32)
    gradient = (np.cos(direction)[:, None, None] * ramp[None, None, :]
                + np.sin(direction)[:, None, None] * ramp[None, :, None])[:, None]  # (N, 1, H, W)
    strength, shade = rng.uniform(0, 45, n), rng.uniform(-0.15, 0.15, n)
    sigma = rng.uniform(4, 14, n).astype(np.float32)
    image = background[:, :, None, None] + strength[:, None, None, None] * gradient  # (N, 3, H, W)
    clutter, masks = clutter[:, None], masks[:, None]
    image = image * (1 - clutter) + clutter_colour[:, :, None, None] * clutter
    shaded = foreground[:, :, None, None] * (1.0 + shade[:, None, None, None] * gradient)
    image = image * (1 - masks) + shaded * masks
    image += rng.standard_normal(image.shape, dtype=np.float32) * sigma[:, None, None, None]
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _pose(rng: np.random.Generator, size: int, low: float, high: float) -> tuple[tuple[float, float], float, float]:
    """Centre (within 12 % of the side from the middle), radius (a share of the side), rotation."""
    radius = _u(rng, low, high) * size
    shift = 0.12 * size
    centre = (size / 2 + _u(rng, -shift, shift), size / 2 + _u(rng, -shift, shift))
    return centre, radius, math.radians(_u(rng, -25, 25))


# ------------------------------------------------------------------ the datasets


def render_shapes(image_size: int = 0, per_class: int = SHAPES_PER_CLASS,
                  seed: int = SHAPES_SEED) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """24 shape classes x ``per_class`` images, RGB uint8 (N, 3, S, S), labels (N,) int64."""
    size = image_size or DEFAULT_SIZE
    rng = np.random.default_rng(seed)
    masks, clutter, labels = [], [], []
    for label, name in enumerate(SHAPE_NAMES):
        for _ in range(per_class):
            centre, radius, angle = _pose(rng, size, 0.26, 0.40)
            masks.append(_shape_mask(SHAPES[name](rng), size, centre, radius, angle))
            clutter.append(_clutter_mask(rng, size))
            labels.append(label)
    return _shuffled(rng, _compose(rng, np.stack(masks), np.stack(clutter)), labels, SHAPE_NAMES)


def glyph_counts(num_classes: int, seed: int = GLYPHS_SEED, largest: int = GLYPHS_MAX_PER_CLASS) -> list[int]:
    """Images per glyph class: geometric from ``largest`` (300) down to a sixth of it, assigned to
    classes in a seeded order."""
    ratio = GLYPHS_MIN_PER_CLASS / GLYPHS_MAX_PER_CLASS
    counts = [max(round(largest * ratio ** (i / (num_classes - 1))), 1) for i in range(num_classes)]
    order = np.random.default_rng(seed + 1).permutation(num_classes)
    return [counts[int(rank)] for rank in np.argsort(order)]


def render_glyphs(image_size: int = 0, seed: int = GLYPHS_SEED,
                  largest: int = GLYPHS_MAX_PER_CLASS) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """26 capital letters in six DejaVu faces, imbalanced (``glyph_counts``), RGB uint8."""
    size = image_size or DEFAULT_SIZE
    fonts = [_font_file(name) for name in GLYPH_FONTS]
    rng = np.random.default_rng(seed)
    masks, clutter, labels = [], [], []
    for label, (char, count) in enumerate(zip(GLYPH_NAMES, glyph_counts(len(GLYPH_NAMES), seed, largest))):
        for _ in range(count):
            centre, height, angle = _pose(rng, size, 0.55, 0.8)
            font = fonts[int(rng.integers(len(fonts)))]
            masks.append(_glyph_mask(char, font, size, centre, height, angle))
            clutter.append(_clutter_mask(rng, size))
            labels.append(label)
    return _shuffled(rng, _compose(rng, np.stack(masks), np.stack(clutter)), labels, GLYPH_NAMES)


def _shuffled(rng: np.random.Generator, images: np.ndarray, labels: list[int],
              names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    order = rng.permutation(len(labels))
    return torch.from_numpy(images[order]).contiguous(), torch.tensor(labels, dtype=torch.int64)[order], names


def _font_file(name: str) -> Path:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    if not path.is_file():
        raise BadInput(f"synth_glyphs: font {name} not found in matplotlib's data ({path.parent})")
    return path
