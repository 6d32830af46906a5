"""What the network calls "style", layer by layer (Gatys et al. 2015, Fig. 1), as data for one sheet.

For each style layer l (relu1_1 ... relu5_1):
- a texture reconstructed from noise by matching the painting's style matrices of layers 1..l
  (fine grain at layer 1, brush strokes and shapes by layers 4-5);
- that layer's style matrix, restricted to its most active channels and reordered so that channels
  which fire together sit together;
- for a few of the strongest channels, the patches of the painting that excite them most, each as
  large as the unit's receptive field.

The pure parts (ordering, patch search, per-layer targets) are functions tested by hand; `Explainer`
runs them on a `Stylizer` and keeps the finished sheets in a small LRU, keyed like style targets.
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

import torch
from PIL import Image

from .losses import normalized_gram
from .optimize import Progress, ProgressCallback, Stylizer, pixel_key
from .params import STYLE_LAYERS, StyleParams
from .pixels import fit_long_side, resize_image
from .schedule import iteration_caps, scale_sizes
from .texture import check_painting, synthesize, texture_params
from .vgg import receptive_field

# Side of each reconstruction: 128 px shows strokes and motifs and keeps five reconstructions
# within about a minute on a 2-core CPU.
EXPLAIN_SIZE = 128
# Iterations at the final scale of each reconstruction (early stop usually ends sooner).
EXPLAIN_STEPS = 120
# Long side the painting is analysed at (style matrices, patches, reconstruction targets): at this
# size relu4_1's units see a quarter of the width and relu5_1's most of it, so patches stay telling.
ANALYSIS_SIDE = 256
# Channels shown in each style matrix (relu1_1 has 64, deeper layers up to 512).
HEATMAP_CHANNELS = 32
# Channels whose favourite patches are shown, and patches per channel.
PATCH_CHANNELS = 3
PATCHES_PER_CHANNEL = 3


# ---------------------------------------------------------------------------------------------
# The pure maths
# ---------------------------------------------------------------------------------------------

def reconstruction_layers(style_layers: Sequence[str] = STYLE_LAYERS) -> list[tuple[str, ...]]:
    """The layer sets of the reconstructions: layers 1..l for each l, as in Fig. 1 of Gatys et al."""
    return [tuple(style_layers[: i + 1]) for i in range(len(style_layers))]


def stage_params(base: StyleParams, layers: tuple[str, ...]) -> StyleParams:
    """The texture job that reconstructs from layers 1..l: equal weights 1/l, network cut at layer l."""
    return texture_params(replace(base, style_layers=layers, style_layer_weights=None, tileable=False))


def stage_plan(painting_size: tuple[int, int], params: StyleParams) -> list[StyleParams]:
    """One texture job per reconstruction, for a painting already at its analysed size.

    The targets are taken at the analysed size: the style image covers style_scale^2 times the
    output's area, so a reconstruction shows the strokes at the scale the patches show them.
    """
    style_scale = min(4.0, math.sqrt(painting_size[0] * painting_size[1]) / params.size)
    base = replace(params, style_scale=style_scale)
    return [stage_params(base, layers) for layers in reconstruction_layers(params.style_layers)]


def strongest_channels(gram: torch.Tensor, count: int) -> list[int]:
    """The `count` channels with the largest diagonal (mean squared activation), strongest first.

    Ties go to the lower channel index, so the choice does not depend on the sort's stability.
    """
    energy = torch.diagonal(gram).double().tolist()
    return sorted(range(len(energy)), key=lambda c: (-energy[c], c))[:count]


def correlation(gram: torch.Tensor) -> torch.Tensor:
    """G_ij / sqrt(G_ii G_jj): how often channels i and j fire together, 0..1 for ReLU activations.

    The raw Gram is dominated by the few loudest channels; dividing by their energies shows the
    co-occurrence itself (it is the cosine between the two channels' activation maps). Silent
    channels (G_ii = 0) correlate with nothing.
    """
    g = gram.double()
    norms = torch.diagonal(g).clamp_min(0).sqrt()
    outer = norms[:, None] * norms[None, :]
    return torch.where(outer > 0, g / outer.clamp_min(1e-300), torch.zeros_like(g)).float()


def cluster_order(similarity: torch.Tensor) -> list[int]:
    """An order of the rows in which similar rows sit together: the leaf order of average linkage.

    Repeatedly merges the two groups with the highest mean similarity. When two groups join, each may
    be flipped so that the most similar ends meet. Deterministic: ties go to the lowest indices.
    Groups that are blocks of mutual similarity always end up contiguous.
    """
    s = similarity.double()
    n = s.shape[0]
    groups: dict[int, list[int]] = {i: [i] for i in range(n)}
    while len(groups) > 1:
        ids = sorted(groups)
        best: tuple[float, int, int] | None = None
        for x, a in enumerate(ids):
            for b in ids[x + 1:]:
                link = s[groups[a]][:, groups[b]].mean().item()
                if best is None or link > best[0] + 1e-12:
                    best = (link, a, b)
        assert best is not None
        _, a, b = best
        left, right = groups.pop(a), groups.pop(b)
        joins = [(left, right), (left[::-1], right), (left, right[::-1]), (left[::-1], right[::-1])]
        # The first join wins ties (max returns the first maximum).
        merged = max(joins, key=lambda lr: s[lr[0][-1], lr[1][0]].item())
        groups[a] = merged[0] + merged[1]
    return next(iter(groups.values())) if groups else []


@dataclass(frozen=True)
class StyleMatrixView:
    channels: tuple[int, ...]
    """The shown channels, in display order."""
    matrix: torch.Tensor
    """(k, k) correlations of those channels, in that order."""


def style_matrix_view(gram: torch.Tensor, count: int = HEATMAP_CHANNELS) -> StyleMatrixView:
    """The `count` most active channels of a style matrix, ordered so that co-firing ones sit together."""
    top = strongest_channels(gram, count)
    corr = correlation(gram)[top][:, top]
    order = cluster_order(corr)
    channels = tuple(top[i] for i in order)
    return StyleMatrixView(channels, corr[order][:, order])


@dataclass(frozen=True)
class Patch:
    box: tuple[int, int, int, int]
    """(left, top, right, bottom) in the analysed painting's pixels, clipped to it."""
    value: float
    """The channel's activation at this unit."""
    unit: tuple[int, int]
    """(row, column) of the unit in the layer's map."""


def patch_box(row: int, col: int, layer: str, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixels a unit of `layer` sees: its receptive field, centred on the unit.

    With 3x3 convolutions (pad 1) and 2x2/2 poolings, unit i is centred on pixel stride*(i + 0.5) - 0.5.
    A field that sticks out of the image (the network sees padding there) is shifted inside it, so
    every patch shows the same amount of painting; a field larger than the image is cut to it.
    """
    size, stride = receptive_field(layer)
    width, height = image_size

    def span(i: int, limit: int) -> tuple[int, int]:
        centre = stride * (i + 0.5) - 0.5
        start = math.floor(centre - (size - 1) / 2 + 0.5)  # the first of `size` pixels around the centre
        start = min(max(0, start), max(0, limit - size))
        return start, min(limit, start + size)

    left, right = span(col, width)
    top, bottom = span(row, height)
    return left, top, right, bottom


def top_patches(
    activation: torch.Tensor, layer: str, image_size: tuple[int, int], count: int = PATCHES_PER_CHANNEL
) -> list[Patch]:
    """The `count` units of one channel's (H, W) map that fire most, without near-duplicates.

    Greedy non-maximum suppression: after taking a unit, units whose receptive fields would overlap
    it by more than half (closer than half a field, in map units) are skipped. Only units that fire
    at all (> 0) count. Strongest first; ties go to the first unit in reading order.
    """
    size, stride = receptive_field(layer)
    radius = max(1, math.ceil(size / 2 / stride))  # half a receptive field, in units of the map
    flat = activation.detach().float().cpu().flatten()
    width = activation.shape[-1]
    taken: list[Patch] = []
    for k in torch.argsort(-flat, stable=True).tolist():  # stable: ties in reading order
        value = flat[k].item()
        if value <= 0 or len(taken) >= count:
            break
        row, col = divmod(k, width)
        if any(abs(row - p.unit[0]) < radius and abs(col - p.unit[1]) < radius for p in taken):
            continue
        taken.append(Patch(patch_box(row, col, layer, image_size), value, (row, col)))
    return taken


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------

@dataclass
class LayerView:
    layer: str
    reconstruction: Image.Image
    """Texture from noise matching the style matrices of this layer and all shallower ones."""
    style_loss: float
    """The style term the reconstruction reached (its own layer set)."""
    matrix: StyleMatrixView
    patches: list[tuple[int, list[Patch]]]
    """(channel, its favourite patches) for the strongest channels."""
    receptive_field: int
    """Pixels (of the analysed painting) one unit of this layer sees, per side."""


@dataclass
class Explanation:
    painting: Image.Image
    """The painting as analysed (see `analysed`); patch boxes are in its pixels."""
    layers: list[LayerView]
    timings: dict[str, float]
    """Seconds: 'total', and 'layer<i>' per reconstruction."""
    cached: bool = False


def explain_params(seed: int = 0, size: int = EXPLAIN_SIZE, steps: int = EXPLAIN_STEPS) -> StyleParams:
    """Defaults for an explanation: small square reconstructions, a fixed seed (the same sheet each time)."""
    return StyleParams(size=size, steps=steps, seed=seed)


def analysed(painting: Image.Image, side: int = ANALYSIS_SIDE) -> Image.Image:
    """The painting at the size it is analysed at: long side `side`, or its own if smaller (never blown up)."""
    return resize_image(painting.convert("RGB"), fit_long_side(*painting.size, min(side, max(painting.size))))


class Explainer:
    """Builds `Explanation`s on one Stylizer, keeping the last few (by painting key and parameters).

    Not thread-safe, like the Stylizer it drives.
    """

    def __init__(self, stylizer: Stylizer, *, cache_entries: int = 8) -> None:
        self.stylizer = stylizer
        self.cache_entries = cache_entries
        self._cache: OrderedDict[Hashable, Explanation] = OrderedDict()

    def explain(
        self,
        painting: Image.Image,
        params: StyleParams = explain_params(),
        *,
        key: str | None = None,
        callback: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Explanation:
        """Explain the style of `painting`; `params.size` is each reconstruction's side, `params.steps`
        its iterations. `key` names the painting for the cache (e.g. a preset's key); None = its pixels.

        Progress reports `scale` = the layer being reconstructed (0-4) and `num_scales` = 5.
        """
        check_painting(painting.size)
        if params.seed is None:
            params = replace(params, seed=0)  # a sheet is an explanation, not a lottery: same every time
        cache_key = (key or pixel_key(painting.convert("RGB")), params)
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            return replace(self._cache[cache_key], cached=True)
        explanation = self._build(painting, params, cache_key[0], callback, cancel)
        self._cache[cache_key] = explanation
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)
        return explanation

    def _build(
        self,
        painting: Image.Image,
        params: StyleParams,
        key: str,
        callback: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> Explanation:
        start = time.perf_counter()
        small = analysed(painting)
        stages = stage_plan(small.size, params)
        acts = self.stylizer.activations(small, stages[-1])
        per_stage = sum(iteration_caps(len(scale_sizes(params.size, params.size, params.size, params.scales)),
                                       params.steps))
        relay = _StageRelay(callback, len(stages), per_stage, start)
        timings: dict[str, float] = {}
        layers: list[LayerView] = []
        for index, stage in enumerate(stages):
            t = time.perf_counter()
            layer = stage.style_layers[-1]
            relay.stage = index
            result = synthesize(self.stylizer, small, stage, style_key=f"explain:{key}",
                                callback=relay if callback is not None else None, cancel=cancel)
            relay.finish_stage(result.iterations)
            a = acts[layer][0]
            view = style_matrix_view(normalized_gram(acts[layer]))
            strongest = strongest_channels(normalized_gram(acts[layer]), PATCH_CHANNELS)
            patches = [(c, top_patches(a[c], layer, small.size)) for c in strongest]
            layers.append(LayerView(layer, result.image, result.losses["style"], view, patches,
                                    receptive_field(layer)[0]))
            timings[f"layer{index}"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - start
        return Explanation(small, layers, timings)


class _StageRelay:
    """Re-reports each reconstruction's Progress as one job: scale = stage, iterations summed."""

    def __init__(self, callback: ProgressCallback | None, stages: int, per_stage: int, start: float) -> None:
        self.callback = callback
        self.stages = stages
        self.per_stage = per_stage
        self.start = start
        self.stage = 0
        self.done = 0  # iterations of finished stages

    def finish_stage(self, iterations: int) -> None:
        self.done += iterations

    def __call__(self, p: Progress) -> None:
        if self.callback is None:
            return
        later = (self.stages - self.stage - 1) * self.per_stage
        iteration = self.done + p.iteration
        elapsed = time.perf_counter() - self.start
        # Deeper stages cost more per iteration; the average so far is a fair, slightly low guess.
        eta = p.eta + later * elapsed / max(iteration, 1)
        self.callback(replace(p, scale=self.stage, num_scales=self.stages, iteration=iteration,
                              total=self.done + p.total + later, elapsed=elapsed, eta=eta))
