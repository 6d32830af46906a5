"""Fixtures shared by all tests: tiny generated images (never ../shared) and one CPU Stylizer."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from nst_engine.core.optimize import Stylizer
from nst_engine.core.params import EngineOptions

pytest_plugins = ["devtools.discord_double.pytest_plugin"]


def make_content(width: int = 64, height: int = 40) -> Image.Image:
    """A 'photo': a green-to-grey gradient with a dark disc and a light bar."""
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    base = 60 + 120 * x * np.array([0.4, 1.0, 0.5]) + 60 * y
    image = Image.fromarray(np.broadcast_to(base, (height, width, 3)).clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.2, height * 0.2, width * 0.55, height * 0.8), fill=(30, 40, 35))
    draw.rectangle((width * 0.65, height * 0.1, width * 0.8, height * 0.9), fill=(220, 225, 210))
    return image


def make_style(size: int = 48) -> Image.Image:
    """A 'painting': saturated red and blue diagonal stripes."""
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = ((xx + yy) // 4) % 2 == 0
    array = np.where(stripes[..., None], np.array([220, 30, 40]), np.array([30, 50, 210]))
    return Image.fromarray(array.astype(np.uint8), "RGB")


@pytest.fixture
def content_image() -> Image.Image:
    return make_content()


@pytest.fixture
def style_image() -> Image.Image:
    return make_style()


@pytest.fixture(scope="session")
def stylizer() -> Stylizer:
    return Stylizer(EngineOptions(device="cpu"))
