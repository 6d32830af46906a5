"""Conversions between PIL images and the (1, 3, H, W) float tensors in 0-255 the optimiser works on."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Anything smaller cannot pass VGG19's four poolings before relu5_1 and still leave a spatial map.
MIN_SIDE = 16


def to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_image(x: torch.Tensor) -> Image.Image:
    array = x.detach()[0].float().clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def fit_long_side(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) with the long side `long_side` and the aspect ratio kept."""
    scale = long_side / max(width, height)
    return max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale))


def fit_area(width: int, height: int, area: float) -> tuple[int, int]:
    """(w, h) covering about `area` pixels with the aspect ratio kept."""
    scale = (area / (width * height)) ** 0.5
    return max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale))


def resize_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def resize_tensor(x: torch.Tensor, size: tuple[int, int], *, wrap: bool = False) -> torch.Tensor:
    """Resize a (1, 3, H, W) tensor to (w, h) = size, bicubic with antialiasing, kept in 0-255.

    wrap: treat the image as one tile of a periodic pattern, so its edges are interpolated from the
    opposite side and a seamless tile stays seamless (exactly so for whole-number factors, such as
    the doubling between coarse-to-fine scales).
    """
    w, h = size
    if x.shape[-2:] == (h, w):
        return x
    if not wrap:
        return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 255)
    sy, sx = h / x.shape[-2], w / x.shape[-1]
    # Borrow more source pixels than the bicubic kernel reaches (2 px, widened by a shrink factor).
    m = min(math.ceil(2 * max(1.0, 1 / sx, 1 / sy)) + 1, x.shape[-2], x.shape[-1])
    padded = F.pad(x, (m, m, m, m), mode="circular")
    big = (round((x.shape[-2] + 2 * m) * sy), round((x.shape[-1] + 2 * m) * sx))
    out = F.interpolate(padded, size=big, mode="bicubic", align_corners=False, antialias=True)
    top, left = round(m * sy), round(m * sx)
    return out[..., top:top + h, left:left + w].clamp(0, 255).contiguous()
