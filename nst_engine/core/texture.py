"""Texture synthesis (Gatys et al. 2015, Fig. 1): a painting's style alone, painted from white noise.

With the content weight at zero, the cost is the style term only: the optimiser turns noise into
an image whose style matrices (Gram matrices of the VGG layers) match the painting's. What comes
out has the painting's colours, strokes and motifs, but none of its composition.

`tileable` pads circularly inside the network, so the texture is optimised as if it were a torus
and repeats seamlessly; sides are then rounded so that every pooling halves an even side.
"""
from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from .losses import normalized_gram, style_cost
from .optimize import BACKBONE_STYLE_GAIN, ProgressCallback, StyleResult, Stylizer
from .params import ParamError, StyleParams
from .pixels import fit_area, resize_image
from .schedule import scale_sizes
from .vgg import LAYER_INDEX, circular_multiple

# beta when alpha = 0: with no content term there is no ratio to keep, and L-BFGS (whose first step
# is sized from the gradient) behaves the same at any scale of the cost.
TEXTURE_STYLE_WEIGHT = 1.0
# Default side of a texture: large enough for a painting's motifs to repeat, and under a minute on a
# 2-core CPU (benchmarks/bench_texture.py).
TEXTURE_SIZE = 256
# Iterations at the final scale: 100 keep a 256 px texture near a minute on 2 CPU cores; 150 lower the
# loss by only another quarter (benchmarks/README.md).
TEXTURE_STEPS = 100
# A painting smaller than this has no strokes or motifs to learn from; upscaling it invents none.
MIN_PAINTING_SIDE = 32
# The canvas the (zero-weighted) content term sees: mid grey. It only fixes the output's size.
_CANVAS_GREY = (128, 128, 128)


def check_painting(size: tuple[int, int]) -> None:
    """ParamError (a sentence for the user) if a painting of this (width, height) is too small to have a texture."""
    if min(size) < MIN_PAINTING_SIDE:
        raise ParamError(
            f"the painting is too small ({size[0]}x{size[1]}): send one at least {MIN_PAINTING_SIDE} px on each side"
        )


def tile_side(size: int, scales: int, multiple: int) -> int:
    """The side nearest `size` at which every coarse-to-fine scale of a tile wraps exactly.

    Scale i (of `scales`) has side size / 2**(scales-1-i); circular padding is exact when each of
    those is a multiple of `multiple` (every pooling halves an even side).
    """
    unit = multiple * 2 ** (scales - 1)
    return max(unit, round(size / unit) * unit)


def texture_params(params: StyleParams) -> StyleParams:
    """`params` turned into a texture job: style term only, from noise, at a square side.

    The content layer is set to the deepest style layer so the network is cut there (its term
    weighs nothing). A tileable texture gets an explicit number of scales and a side that wraps.
    """
    deepest = max(params.style_layers, key=LAYER_INDEX.__getitem__)
    params = replace(params, content_weight=0.0, style_weight=TEXTURE_STYLE_WEIGHT, init="noise",
                     preserve_colors=False, content_layer=deepest)
    if not params.tileable:
        return params
    scales = params.scales or len(scale_sizes(params.size, params.size, params.size, None))
    multiple = circular_multiple(params.style_layers)
    while scales > 1 and multiple * 2 ** (scales - 1) > params.size:
        scales -= 1  # a small tile cannot have as many exact halvings
    return replace(params, size=tile_side(params.size, scales, multiple), scales=scales)


def synthesize(
    stylizer: Stylizer,
    painting: Image.Image,
    params: StyleParams = StyleParams(size=TEXTURE_SIZE, steps=TEXTURE_STEPS),
    *,
    style_key: str | None = None,
    callback: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> StyleResult:
    """A square texture of `params.size` px (see `texture_params`) with the style of `painting`.

    Goes through `Stylizer.stylize`, so progress, previews, cancelling and the cache of style
    targets work as for a stylize job. The result's losses are the style term only.
    """
    check_painting(painting.size)
    params = texture_params(params)
    canvas = Image.new("RGB", (params.size, params.size), _CANVAS_GREY)
    return stylizer.stylize(canvas, [painting.convert("RGB")], params, style_keys=[style_key],
                            callback=callback, cancel=cancel)


def style_loss(stylizer: Stylizer, image: Image.Image, painting: Image.Image, params: StyleParams) -> float:
    """The style term J_style (as the texture job weighs it) of `image` against `painting`.

    The painting is sized as `Stylizer.stylize` sizes a style image for an output of this size, so
    the number is comparable with `StyleResult.losses['style']` of a texture of the same size.
    """
    params = texture_params(params)
    area = image.width * image.height * params.style_scale**2
    style = resize_image(painting.convert("RGB"), fit_area(*painting.size, area))
    target = stylizer.activations(style, params)
    seen = stylizer.activations(image, params)
    grams = {layer: normalized_gram(target[layer]) for layer in params.style_layers}
    cost, _ = style_cost(grams, seen, dict(zip(params.style_layers, params.layer_weights)))
    return float(cost) * params.beta * BACKBONE_STYLE_GAIN[params.backbone]


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Uniform RGB noise, as the texture's first scale starts from (a baseline for its loss)."""
    generator = torch.Generator().manual_seed(seed)
    array = (torch.rand((height, width, 3), generator=generator) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array, "RGB")


def seam_ratio(image: Image.Image) -> float:
    """How visible the wrap-around seam of a tile is: 1 means no more than any other pixel step.

    The mean absolute step from the last column to the first (and last row to the first), divided
    by the mean step between neighbouring columns (rows) inside the image; the worse of the two.
    """
    a = np.asarray(image.convert("RGB"), dtype=np.float64)
    ratios = []
    for axis in (0, 1):
        inside = np.abs(np.diff(a, axis=axis)).mean()
        first, last = np.take(a, 0, axis=axis), np.take(a, -1, axis=axis)
        wrap = np.abs(first - last).mean()
        ratios.append(wrap / max(inside, 1e-9))
    return max(ratios)
