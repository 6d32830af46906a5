"""What users read and see: status lines (bar, percentage, scale, ETA), settings, the presets contact sheet,
and results re-encoded to fit the channel's upload limit.

The image functions are blocking (Pillow): call them through `asyncio.to_thread`.
"""
from __future__ import annotations

import hashlib
import io
import math
import time
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .engine.events import Progress
from .jobs import JobParams

# Strength in words. The engine's dial is 0-10 and each step doubles the style's weight; these are the
# stops users pick from (Stronger/Weaker move one stop).
STRENGTHS: dict[str, float] = {
    "subtle": 3.0, "light": 4.0, "balanced": 5.0, "strong": 6.0, "bold": 7.0, "intense": 8.0,
}
STRENGTH_ORDER: tuple[str, ...] = tuple(STRENGTHS)
DEFAULT_STRENGTH = "balanced"
BAR_WIDTH = 12
# Contact sheet: thumbnails of this side, this many per row, and a caption band under each.
THUMB, COLUMNS, CAPTION = 128, 4, 22


def stronger(level: str) -> str | None:
    i = STRENGTH_ORDER.index(level) if level in STRENGTHS else STRENGTH_ORDER.index(DEFAULT_STRENGTH)
    return STRENGTH_ORDER[i + 1] if i + 1 < len(STRENGTH_ORDER) else None


def weaker(level: str) -> str | None:
    i = STRENGTH_ORDER.index(level) if level in STRENGTHS else STRENGTH_ORDER.index(DEFAULT_STRENGTH)
    return STRENGTH_ORDER[i - 1] if i > 0 else None


def relative_time(seconds_from_now: float | None, now: float | None = None) -> str | None:
    """A Discord relative timestamp (`<t:unix:R>`, shown as 'in 2 minutes' in each user's locale)."""
    if seconds_from_now is None or not math.isfinite(seconds_from_now):
        return None
    return f"<t:{int((now if now is not None else time.time()) + max(0.0, seconds_from_now))}:R>"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    return "▰" * filled + "▱" * (width - filled)


def settings_line(params: JobParams) -> str:
    parts = [f"style: {params.style_label or 'your image'}", f"strength: {params.strength}", f"{params.size} px"]
    if params.preserve_colors:
        parts.append("colours kept")
    if params.seed is not None:
        parts.append(f"seed {params.seed}")
    return " · ".join(parts)


def queued_text(mention: str, job_id: str, position: int | None, eta_s: float | None) -> str:
    where = f"position **{position}** in the queue" if position else "in the queue"
    eta = relative_time(eta_s)
    eta_part = f", starting {eta}" if eta else ""
    return f"{mention} 🕒 Job `{job_id}` is queued: {where}{eta_part}."


def waiting_own_text(mention: str, job_id: str, ahead: int) -> str:
    jobs = "job" if ahead == 1 else "jobs"
    return f"{mention} 🕒 Job `{job_id}` is queued: it starts after your {ahead} earlier {jobs}."


def offline_text(mention: str, job_id: str) -> str:
    return f"{mention} 💤 Job `{job_id}`: the style engine is offline; your job will run when it is back."


def busy_text(mention: str, job_id: str) -> str:
    return (f"{mention} 🕒 Job `{job_id}`: the style engine's queue is full; your job goes in as soon as there "
            "is room.")


def progress_text(mention: str, job_id: str, progress: Progress) -> str:
    fraction = progress.fraction
    scale_part = f" · scale {progress.scale}/{progress.num_scales}" if progress.scale and progress.num_scales else ""
    size_part = f" ({progress.width}×{progress.height})" if progress.width and progress.height else ""
    eta = relative_time(progress.eta_s)
    eta_part = f" · done {eta}" if eta else ""
    return (f"{mention} 🎨 Job `{job_id}` is painting: `{bar(fraction)}` **{fraction:.0%}**"
            f"{scale_part}{size_part}{eta_part}")


def notice_text(mention: str, job_id: str, message: str) -> str:
    """Something happened to a running job that the user should know (the engine's sentence)."""
    return f"{mention} ⚠️ Job `{job_id}`: {message}"


def started_text(mention: str, job_id: str) -> str:
    return f"{mention} 🎨 Job `{job_id}` has started."


def done_text(mention: str, job_id: str, params: JobParams, width: int | None = None,
              height: int | None = None, seconds: float | None = None) -> str:
    size = f" · {width}×{height}" if width and height else ""
    took = f" · took {seconds:.0f} s" if seconds else ""
    return f"{mention} ✅ Job `{job_id}` is done.\n-# {settings_line(params)}{size}{took}"


def failed_text(mention: str, job_id: str, message: str) -> str:
    return f"{mention} ❌ Job `{job_id}` failed: {message}"


def cancelled_text(mention: str, job_id: str, by: str | None = None) -> str:
    who = f" by {by}" if by else ""
    return f"{mention} 🚫 Job `{job_id}` was cancelled{who}."


# --- images ---------------------------------------------------------------------------------------------------


def extension_of(data: bytes) -> str:
    """The file extension for an encoded result (the engine sends PNG, JPEG or WebP)."""
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".png"


def image_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (OSError, ValueError):
        return None


def contact_sheet(items: Sequence[tuple[str, bytes | None]], *, thumb: int = THUMB, columns: int = COLUMNS) -> bytes:
    """A PNG grid of labelled thumbnails; items without an image get a coloured tile with their name."""
    columns = max(1, min(columns, len(items)))
    rows = math.ceil(len(items) / columns) if items else 1
    pad = 6
    sheet = Image.new("RGB", (columns * (thumb + pad) + pad, rows * (thumb + CAPTION + pad) + pad), (32, 34, 37))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (name, data) in enumerate(items):
        x = pad + (i % columns) * (thumb + pad)
        y = pad + (i // columns) * (thumb + CAPTION + pad)
        tile = _thumbnail(data, thumb) if data else None
        if tile is None:
            tile = _placeholder(name, thumb)
        sheet.paste(tile, (x, y))
        label = name if len(name) <= 18 else name[:17] + "…"
        width = draw.textlength(label, font=font)
        draw.text((x + (thumb - width) / 2, y + thumb + 5), label, fill=(235, 235, 235), font=font)
    out = io.BytesIO()
    sheet.save(out, "PNG", optimize=True)
    return out.getvalue()


def _thumbnail(data: bytes, side: int) -> Image.Image | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (side * 2, side * 2))
            return ImageOps.fit(im.convert("RGB"), (side, side), Image.Resampling.LANCZOS)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _placeholder(name: str, side: int) -> Image.Image:
    digest = hashlib.sha256(name.encode()).digest()
    tile = Image.new("RGB", (side, side), tuple(60 + b % 140 for b in digest[:3]))
    draw = ImageDraw.Draw(tile)
    for i in range(0, side * 2, 16):  # diagonal hatching, so it reads as 'a style', not a blank
        draw.line((i, 0, i - side, side), fill=tuple(90 + b % 160 for b in digest[3:6]), width=5)
    return tile
