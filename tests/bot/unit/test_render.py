"""render: the status texts users read, strength stops, and the image helpers (fit to the upload limit,
image size, the presets contact sheet). Expected strings are written out by hand."""
from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest
from PIL import Image

from bot import render
from bot.engine.events import Progress, parse_event
from bot.jobs import JobParams

BACKGROUND = (32, 34, 37)
PNG_MAGIC, JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Incompressible pixels, so the encoded size is predictable and large."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def opened(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im


# --- strength stops ------------------------------------------------------------------------------------------------


def test_stronger_and_weaker_walk_the_stops_and_stop_at_the_ends():
    assert render.stronger("subtle") == "light" and render.stronger("bold") == "intense"
    assert render.stronger("intense") is None
    assert render.weaker("light") == "subtle" and render.weaker("intense") == "bold"
    assert render.weaker("subtle") is None


def test_an_unknown_level_moves_from_balanced():
    # a journal written by an older version may hold a level name that no longer exists
    assert render.stronger("extreme") == "strong" and render.weaker("extreme") == "light"


# --- small text pieces --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction, expected", [
    (0.0, "▱" * 12), (1.0, "▰" * 12), (0.5, "▰" * 6 + "▱" * 6), (1 / 3, "▰" * 4 + "▱" * 8),
    (0.04, "▱" * 12),  # 0.48 of a cell rounds down
    (0.96, "▰" * 12),  # 11.52 cells round up
    (-0.5, "▱" * 12), (7.0, "▰" * 12),  # clamped
])
def test_bar(fraction, expected):
    assert render.bar(fraction) == expected


def test_bar_width():
    assert render.bar(0.25, width=4) == "▰▱▱▱" and render.bar(0.5, width=0) == ""


def test_relative_time():
    assert render.relative_time(90, now=1000.7) == "<t:1090:R>"
    assert render.relative_time(-30, now=1000.0) == "<t:1000:R>"  # never in the past
    assert render.relative_time(None) is None
    assert render.relative_time(float("inf")) is None and render.relative_time(float("nan")) is None


def test_relative_time_defaults_to_the_wall_clock():
    before = time.time()
    text = render.relative_time(60)
    after = time.time()
    stamp = int(re.fullmatch(r"<t:(\d+):R>", text).group(1))
    assert int(before) + 60 <= stamp <= int(after) + 60


def test_settings_line():
    assert render.settings_line(JobParams(size=512)) == "style: your image · strength: balanced · 512 px"
    full = JobParams(size=768, strength="bold", preserve_colors=True, seed=0, style_label="preset mosaic")
    assert render.settings_line(full) == "style: preset mosaic · strength: bold · 768 px · colours kept · seed 0"


# --- status messages -------------------------------------------------------------------------------------------------


def test_queued_text():
    assert render.queued_text("<@1>", "ab12", 2, None) == "<@1> 🕒 Job `ab12` is queued: position **2** in the queue."
    assert render.queued_text("<@1>", "ab12", None, None) == "<@1> 🕒 Job `ab12` is queued: in the queue."
    assert render.queued_text("<@1>", "ab12", 0, float("nan")) == "<@1> 🕒 Job `ab12` is queued: in the queue."
    with_eta = render.queued_text("<@1>", "ab12", 3, 120.0)
    match = re.fullmatch(r"<@1> 🕒 Job `ab12` is queued: position \*\*3\*\* in the queue, starting <t:(\d+):R>\.",
                         with_eta)
    assert match and abs(int(match.group(1)) - (time.time() + 120)) <= 2


def test_waiting_own_text_counts_in_words():
    assert render.waiting_own_text("<@1>", "j", 1) == "<@1> 🕒 Job `j` is queued: it starts after your 1 earlier job."
    assert render.waiting_own_text("<@1>", "j", 2) == "<@1> 🕒 Job `j` is queued: it starts after your 2 earlier jobs."


def test_progress_text_with_every_field():
    progress = Progress(iteration=50, total=200, scale=2, num_scales=3, width=512, height=384)
    assert render.progress_text("<@1>", "j", progress) == (
        "<@1> 🎨 Job `j` is painting: `▰▰▰▱▱▱▱▱▱▱▱▱` **25%** · scale 2/3 (512×384)")


def test_progress_text_with_an_eta():
    text = render.progress_text("<@1>", "j", Progress(iteration=200, total=200, eta_s=30.0))
    match = re.fullmatch(r"<@1> 🎨 Job `j` is painting: `▰{12}` \*\*100%\*\* · done <t:(\d+):R>", text)
    assert match and abs(int(match.group(1)) - (time.time() + 30)) <= 2


@pytest.mark.parametrize("raw", [{}, {"iteration": None, "total": None}, {"iteration": 0, "total": 0},
                                 {"scale": 1, "width": 64}])  # half of a pair is left out
def test_progress_text_tolerates_missing_fields(raw):
    progress = parse_event({"type": "progress", **raw})
    assert render.progress_text("<@1>", "j", progress) == "<@1> 🎨 Job `j` is painting: `▱▱▱▱▱▱▱▱▱▱▱▱` **0%**"


def test_final_and_other_status_texts():
    params = JobParams(size=512)
    assert render.done_text("<@1>", "j", params) == (
        "<@1> ✅ Job `j` is done.\n-# style: your image · strength: balanced · 512 px")
    assert render.done_text("<@1>", "j", params, 512, 384, 12.4) == (
        "<@1> ✅ Job `j` is done.\n-# style: your image · strength: balanced · 512 px · 512×384 · took 12 s")
    assert render.failed_text("<@1>", "j", "The image is too big.") == "<@1> ❌ Job `j` failed: The image is too big."
    assert render.cancelled_text("<@1>", "j") == "<@1> 🚫 Job `j` was cancelled."
    assert render.cancelled_text("<@1>", "j", "<@2>") == "<@1> 🚫 Job `j` was cancelled by <@2>."
    assert render.started_text("<@1>", "j") == "<@1> 🎨 Job `j` has started."
    assert render.offline_text("<@1>", "j") == (
        "<@1> 💤 Job `j`: the style engine is offline; your job will run when it is back.")
    assert render.busy_text("<@1>", "j") == (
        "<@1> 🕒 Job `j`: the style engine's queue is full; your job goes in as soon as there is room.")


# --- extension_of ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, ext", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_the_extension_follows_the_encoded_format(fmt, ext):
    assert render.extension_of(encode(noise(32, 16), fmt)) == ext


# --- image_size ------------------------------------------------------------------------------------------------------


def test_image_size():
    assert render.image_size(encode(Image.new("RGB", (40, 24)), "PNG")) == (40, 24)
    assert render.image_size(encode(Image.new("L", (7, 9)), "JPEG")) == (7, 9)
    assert render.image_size(b"not an image") is None
    assert render.image_size(b"") is None


# --- contact_sheet -----------------------------------------------------------------------------------------------


def sheet(items, **kwargs) -> Image.Image:
    data = render.contact_sheet(items, **kwargs)
    assert data.startswith(PNG_MAGIC)
    return opened(data).convert("RGB")


@pytest.mark.parametrize("count, columns, size", [
    # width = columns * (thumb + 6) + 6; height = rows * (thumb + 22 + 6) + 6, thumb 32
    (5, 4, (158, 126)), (4, 4, (158, 66)), (2, 4, (82, 66)), (3, 1, (44, 186)), (0, 4, (44, 66)),
])
def test_sheet_size(count, columns, size):
    items = [(f"p{i}", None) for i in range(count)]
    assert sheet(items, thumb=32, columns=columns).size == size


def test_thumbnails_sit_in_their_cells_on_the_background():
    red = encode(Image.new("RGB", (64, 64), (255, 0, 0)), "PNG")
    blue = encode(Image.new("RGB", (40, 80), (0, 0, 255)), "JPEG")  # not square: cropped to fit
    image = sheet([("red", red), ("blue", blue)], thumb=32, columns=2)
    assert image.getpixel((0, 0)) == BACKGROUND
    assert image.getpixel((6 + 16, 6 + 16)) == (255, 0, 0)  # cell 0 starts at (6, 6)
    r, g, b = image.getpixel((6 + 38 + 16, 6 + 16))  # cell 1 starts at x = 6 + 32 + 6
    assert b > 200 and r < 40 and g < 40  # JPEG: nearly pure blue
    assert image.getpixel((6 + 32 + 3, 20)) == BACKGROUND  # the gap between the cells


def test_captions_are_drawn_under_each_tile():
    image = sheet([("mosaic", encode(Image.new("RGB", (8, 8)), "PNG"))], thumb=64, columns=1)
    band = image.crop((6, 6 + 64, 6 + 64, 6 + 64 + 22))  # the caption band under the tile
    assert np.asarray(band).max() > 200  # light text on the dark background


def test_items_without_a_readable_image_get_a_placeholder_unique_to_their_name():
    a1 = sheet([("alpha", None)], thumb=32, columns=1)
    a2 = sheet([("alpha", b"not an image")], thumb=32, columns=1)
    b = sheet([("beta", None)], thumb=32, columns=1)
    tile = (6, 6, 38, 38)
    assert a1.crop(tile).tobytes() == a2.crop(tile).tobytes()  # same name, same tile
    assert a1.crop(tile).tobytes() != b.crop(tile).tobytes()
    assert not (np.asarray(a1.crop(tile)) == BACKGROUND).all(axis=-1).any()


def test_long_names_are_shortened_in_the_caption():
    band = (6, 6 + 128, 6 + 128, 6 + 128 + 22)

    def caption(name: str) -> bytes:
        return sheet([(name, None)], thumb=128, columns=1).crop(band).tobytes()

    # over 18 characters: the first 17 and an ellipsis
    assert caption("x" * 18 + "yyyy") == caption("x" * 17 + "…")
    assert caption("x" * 18) != caption("x" * 17 + "…")  # 18 fit as they are
