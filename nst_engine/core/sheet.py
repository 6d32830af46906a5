"""Draw an `Explanation` as one picture that reads in a chat message: a column per layer.

Rows: the texture painted from noise, the style matrix as a heat-map, the strongest channels'
favourite patches, and a few plain words. Pillow only (its built-in scalable font), no I/O.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from .explain import HEATMAP_CHANNELS, PATCH_CHANNELS, PATCHES_PER_CHANNEL, Explanation, LayerView, Patch

# Geometry (px). Reconstructions are shown 1:1 at their default 128 px; the sheet is ~910x610,
# about the 3:2 a chat client shows large without cropping.
TILE = 128
COLUMN = TILE + 12
LEGEND = 180
MARGIN = 16
HEADER = 92
COLUMN_HEAD = 44
ROW_GAP = 12
WORDS = 46
THUMB_GAP = 4

BACKGROUND = (30, 31, 34)  # Discord's dark theme, so the sheet sits in the chat without a frame
TEXT = (236, 236, 236)
MUTED = (170, 172, 178)

# Perceptual dark-to-bright colour map (after matplotlib's 'magma'), for the heat-maps.
_MAGMA = ((0, 0, 4), (59, 15, 112), (140, 41, 129), (222, 73, 104), (254, 159, 109), (252, 253, 191))

# What each layer's features are, in plain words (Gatys et al., Fig. 1 and Sec. 2).
LAYER_WORDS = {
    "relu1_1": "colours and fine grain",
    "relu2_1": "edges and tiny strokes",
    "relu3_1": "strokes and small patterns",
    "relu4_1": "brush strokes and motifs",
    "relu5_1": "large shapes and structures",
}


def colormap(value: float) -> tuple[int, int, int]:
    """0..1 (clamped) to a colour of the dark-to-bright map, linearly between its anchors."""
    v = min(1.0, max(0.0, value)) * (len(_MAGMA) - 1)
    i = min(int(v), len(_MAGMA) - 2)
    t = v - i
    a, b = _MAGMA[i], _MAGMA[i + 1]
    return tuple(round(a[k] + (b[k] - a[k]) * t) for k in range(3))  # type: ignore[return-value]


def contrast(matrix: torch.Tensor, low: float = 0.05, high: float = 0.95) -> torch.Tensor:
    """Correlations stretched so the `low` quantile of the pairs off the diagonal is 0 and the `high` one 1.

    ReLU channels all correlate positively (0.3-0.6 on average) and a few near-duplicate pairs reach
    1, so on an absolute scale every matrix looks alike; stretched between quantiles, the groups that
    fire together stand out. The diagonal (each channel with itself) is drawn at full brightness.
    """
    k = matrix.shape[0]
    if k < 2:
        return torch.ones_like(matrix)
    off = ~torch.eye(k, dtype=torch.bool)
    values = matrix[off].double()
    lo, hi = torch.quantile(values, low).item(), torch.quantile(values, high).item()
    stretched = ((matrix - lo) / (hi - lo)).clamp(0, 1) if hi > lo else torch.full_like(matrix, 0.5)
    return torch.where(off, stretched, torch.ones_like(matrix))


def heatmap_image(matrix: torch.Tensor, side: int = TILE) -> Image.Image:
    """A (k, k) matrix of values in 0..1 as a side x side picture of k x k coloured cells."""
    k = matrix.shape[0]
    cells = Image.new("RGB", (k, k))
    cells.putdata([colormap(v) for v in matrix.double().flatten().tolist()])
    return cells.resize((side, side), Image.Resampling.NEAREST)


def patch_thumbnail(painting: Image.Image, patch: Patch, side: int) -> Image.Image:
    """The patch, fitted into a side x side square: small fields enlarged with visible pixels."""
    crop = painting.crop(patch.box)
    scale = side / max(crop.size)
    size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    thumb = Image.new("RGB", (side, side), BACKGROUND)
    thumb.paste(crop.resize(size, resample), ((side - size[0]) // 2, (side - size[1]) // 2))
    return thumb


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap to `width` px."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, size: int, width: int,
          fill: tuple[int, int, int] = TEXT, spacing: int = 3) -> None:
    font = _font(size)
    draw.multiline_text(xy, "\n".join(wrap(text, font, width)), font=font, fill=fill, spacing=spacing)


def _patch_grid(painting: Image.Image, patches: Sequence[tuple[int, list[Patch]]]) -> Image.Image:
    side = (TILE - (PATCHES_PER_CHANNEL - 1) * THUMB_GAP) // PATCHES_PER_CHANNEL
    grid = Image.new("RGB", (TILE, TILE), BACKGROUND)
    for row, (_, found) in enumerate(patches[:PATCH_CHANNELS]):
        for col, patch in enumerate(found[:PATCHES_PER_CHANNEL]):
            grid.paste(patch_thumbnail(painting, patch, side), (col * (side + THUMB_GAP), row * (side + THUMB_GAP)))
    return grid


def render_sheet(explanation: Explanation, name: str) -> Image.Image:
    """The whole explanation as one RGB picture; `name` is what the painting is called in the title."""
    layers = explanation.layers
    width = 2 * MARGIN + LEGEND + len(layers) * COLUMN
    rows_top = MARGIN + HEADER + COLUMN_HEAD
    height = rows_top + 3 * (TILE + ROW_GAP) + WORDS + MARGIN
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)

    painting = explanation.painting.copy()
    painting.thumbnail((LEGEND - 12, HEADER))
    sheet.paste(painting, (MARGIN, MARGIN))
    x0 = MARGIN + LEGEND
    _text(draw, (x0, MARGIN), f"What the network calls the style of {name}", 24, width - x0 - MARGIN)
    _text(draw, (x0, MARGIN + 34),
          "Style = which features occur together, wherever they are (the style matrix). "
          "Each column adds a deeper layer: early layers see small patches, deep layers large structures.",
          15, width - x0 - MARGIN, MUTED)

    legend = (
        "Painted from white noise to match the style matrices of layers 1 up to this one",
        f"Style matrix of the {HEATMAP_CHANNELS} busiest channels: bright = they often fire together",
        f"Patches that excite the {PATCH_CHANNELS} strongest channels most (one row each)",
    )
    for row, words in enumerate(legend):
        _text(draw, (MARGIN, rows_top + row * (TILE + ROW_GAP) + 4), words, 15, LEGEND - 14)
    _text(draw, (MARGIN, rows_top + 3 * (TILE + ROW_GAP) + 2), "In plain words:", 15, LEGEND - 14, MUTED)

    for index, view in enumerate(layers):
        _draw_column(sheet, draw, explanation, view, index, x0 + index * COLUMN, rows_top)
    return sheet


def _draw_column(sheet: Image.Image, draw: ImageDraw.ImageDraw, explanation: Explanation, view: LayerView,
                 index: int, x: int, rows_top: int) -> None:
    draw.text((x, rows_top - COLUMN_HEAD), f"Layer {index + 1}", font=_font(20), fill=TEXT)
    draw.text((x, rows_top - COLUMN_HEAD + 23), f"{view.layer} · sees {view.receptive_field} px",
              font=_font(13), fill=MUTED)
    reconstruction = view.reconstruction
    if reconstruction.size != (TILE, TILE):
        reconstruction = reconstruction.resize((TILE, TILE), Image.Resampling.LANCZOS)
    sheet.paste(reconstruction, (x, rows_top))
    sheet.paste(heatmap_image(contrast(view.matrix.matrix)), (x, rows_top + TILE + ROW_GAP))
    sheet.paste(_patch_grid(explanation.painting, view.patches), (x, rows_top + 2 * (TILE + ROW_GAP)))
    _text(draw, (x, rows_top + 3 * (TILE + ROW_GAP) + 2), LAYER_WORDS.get(view.layer, view.layer), 15, TILE)
