"""The Gatys et al. optimisation: pixels of G are the parameters, VGG19 is frozen.

`Stylizer` owns a device, the frozen backbone(s) and a cache of style targets; `Stylizer.stylize`
runs one job. The loop does no I/O: it reports `Progress` through a callback and checks a cancel
flag every iteration.
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace

import torch
from PIL import Image
from torch import nn

from .colour import grey_rgb, luminance, match_colors, match_luminance, with_content_chroma
from .devices import (
    CompileUnavailable,
    bf16_unsupported,
    compile_unavailable,
    configure_tf32,
    reserve_compile_entries,
    resolve_device,
)
from .losses import blend_grams, normalized_gram, total_cost
from .params import EngineOptions, ParamError, StyleParams
from .pixels import fit_area, fit_long_side, resize_image, resize_tensor, to_image, to_tensor
from .schedule import Clock, iteration_caps, plateaued, scale_sizes
from .vgg import build_vgg19

log = logging.getLogger(__name__)

# L-BFGS's first step in torch is lr/||g||_1, a tiny move on a 0-255 image; the line search then
# spends ~7 evaluations widening it. The first iteration instead moves the steepest pixel this far.
FIRST_STEP_PIXELS = 4.0
# beta/alpha is calibrated on the Caffe weights (inputs 0-255). torchvision's model sees inputs
# about 58x smaller (1/(255*std)), which scales content terms by ~58^2 and Grams' squares by ~58^4;
# this restores the balance approximately.
BACKBONE_STYLE_GAIN = {"caffe": 1.0, "torchvision": 58.0**2}
# (width, height) of the warm-up passes: as small as the coarsest scale, and not square.
WARM_UP_SIZE = (64, 48)


class Cancelled(Exception):
    """Raised by `Stylizer.stylize` when the cancel event was set; stops within one iteration."""


@dataclass
class Progress:
    scale: int
    """0-based index of the current scale."""
    num_scales: int
    iteration: int
    """Iterations done so far, over all scales (1-based after the first step)."""
    total: int
    """Upper bound on iterations over all scales (early stop may end sooner)."""
    losses: dict[str, float]
    """'total', 'content', 'style', 'tv', and 'style:<layer>' for each style layer (weighted)."""
    elapsed: float
    eta: float
    """Seconds left, estimated from the cost per pixel so far."""
    size: tuple[int, int]
    """(width, height) of the image at this scale."""
    _render: Callable[[int], Image.Image] | None = field(default=None, repr=False)

    def preview(self, max_side: int = 256) -> Image.Image:
        """The picture as it is now, at most `max_side` px on its long side (only valid during the callback)."""
        if self._render is None:
            raise RuntimeError("no preview available")
        return self._render(max_side)


@dataclass
class StyleResult:
    image: Image.Image
    """RGB output at the requested size."""
    losses: dict[str, float]
    """Final losses at the last scale, same keys as `Progress.losses`."""
    timings: dict[str, float]
    """Seconds: 'setup', 'optimize', 'total', and 'scale<i>' for each scale."""
    iterations: int
    evaluations: int
    """Forward+backward passes (an L-BFGS line search sometimes needs more than one per iteration)."""
    scales: list[tuple[int, int]]
    """(width, height) of each scale, coarse to fine."""
    device: str


ProgressCallback = Callable[[Progress], None]


class StyleTargetCache:
    """LRU of style targets (normalised Gram matrices per layer), keyed by what determines them."""

    def __init__(self, max_entries: int = 32) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, dict[str, torch.Tensor]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: Hashable, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        value = compute()
        self._entries[key] = value
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def pixel_key(image: Image.Image) -> str:
    """A cache key for an image's content (a few ms for a megapixel)."""
    return "sha1:" + hashlib.sha1(image.tobytes() + repr((image.mode, image.size)).encode()).hexdigest()


@dataclass
class _Scale:
    """Everything fixed while one scale is optimised."""

    content_target: torch.Tensor
    grams: dict[str, torch.Tensor]
    content_rgb: torch.Tensor
    """Content pixels at this scale (for colour preservation and previews)."""


class Stylizer:
    """Runs style transfer jobs on one device. Not thread-safe: one job at a time per instance."""

    def __init__(self, options: EngineOptions = EngineOptions(), *, cache_entries: int = 32) -> None:
        self._device = resolve_device(options.device)
        if self._device.type == "cuda":
            configure_tf32(options.tf32)
        if options.bf16:
            reason = bf16_unsupported(self._device)
            if reason is not None:
                log.warning("bf16 is off on %s: %s; running in fp32", self._device, reason)
                options = replace(options, bf16=False)
        if options.compile:
            reason = compile_unavailable(self._device.type)
            if reason is not None:
                raise CompileUnavailable(reason)
        self.options = options
        """The options in effect (bf16 is switched off on GPUs without bf16 tensor cores)."""
        self._models: dict[tuple, nn.Module] = {}
        self.style_cache = StyleTargetCache(cache_entries)

    @property
    def device(self) -> str:
        return str(self._device)

    # -- model -------------------------------------------------------------------------------
    def _model(self, params: StyleParams) -> nn.Module:
        layers = (params.content_layer, *params.style_layers)
        key = (params.backbone, params.pooling, layers)
        model = self._models.get(key)
        if model is None:
            net = build_vgg19(layers, pooling=params.pooling, backbone=params.backbone,
                              weights_path=self.options.weights_path)
            net = net.to(self._device)
            if self.options.channels_last:
                net = net.to(memory_format=torch.channels_last)
            model = net
            if self.options.compile:
                # Every job has a new size: one graph for all sizes instead of one per size. The graphs of all
                # devices share one cache (one code object), so each compiled model widens its limit.
                reserve_compile_entries()
                # Tracing reads .grad of the input, which in the loop is a non-leaf (a layout copy of the image).
                warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is not a leaf", UserWarning)
                # Inductor specialises a convolution's backward to the traced size unless it may pick channels-last
                # layouts itself (measured on torch 2.14: every new size recompiled the loop's graph); forced on.
                model = torch.compile(net, dynamic=True, options={"force_layout_optimization": True})
            self._models[key] = model
        return model

    def warm_up(self, params: StyleParams = StyleParams()) -> None:
        """Load the model and run it the way jobs do: a no-grad pass (targets) and a pass with backward (the loop).

        The image is small and not square: with dynamic shapes a square one would tie height to width.
        """
        model = self._model(params)
        with torch.no_grad():
            self._features(model, torch.full((1, 3, WARM_UP_SIZE[1], WARM_UP_SIZE[0]), 128.0, device=self._device))
        x = torch.full((1, 3, WARM_UP_SIZE[1], WARM_UP_SIZE[0]), 128.0, device=self._device, requires_grad=True)
        features = self._features(model, x)
        sum(f.float().square().mean() for f in features.values()).backward()

    def _features(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # Always dense in the model's layout: an expanded (grey) or strided input would otherwise be another
        # graph for torch.compile, and an extra layout conversion for the convolutions.
        x = x.contiguous(memory_format=torch.channels_last if self.options.channels_last else torch.contiguous_format)
        with torch.autocast(self._device.type, dtype=torch.bfloat16, enabled=self.options.bf16):
            return model(x)

    # -- targets -----------------------------------------------------------------------------
    def _style_grams(
        self,
        model: nn.Module,
        params: StyleParams,
        style: Image.Image,
        key: str,
        size: tuple[int, int],
        content_rgb: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        colour_tag: tuple = ()
        if params.preserve_colors:
            # These transforms depend on the content's colours, so they are part of the key.
            stats = content_rgb.mean(dim=(0, 2, 3)).tolist() + content_rgb.std(dim=(0, 2, 3)).tolist()
            colour_tag = (params.color_method, tuple(round(v, 2) for v in stats))
        cache_key = (key, params.backbone, params.pooling, params.style_layers, size, colour_tag)

        def compute() -> dict[str, torch.Tensor]:
            s = to_tensor(resize_image(style, size)).to(self._device)
            if params.preserve_colors and params.color_method == "match":
                s = match_colors(s, content_rgb)
            elif params.preserve_colors:
                s = grey_rgb(match_luminance(luminance(s), luminance(content_rgb)).clamp(0, 255))
            with torch.no_grad():
                feats = self._features(model, s)
                return {layer: normalized_gram(feats[layer]) for layer in params.style_layers}

        return self.style_cache.get_or_compute(cache_key, compute)

    def _prepare_scale(
        self,
        model: nn.Module,
        params: StyleParams,
        content: Image.Image,
        styles: Sequence[Image.Image],
        keys: Sequence[str],
        blend: Sequence[float],
        size: tuple[int, int],
    ) -> _Scale:
        content_rgb = to_tensor(resize_image(content, size)).to(self._device)
        seen = grey_rgb(luminance(content_rgb)) if self._luminance_only(params) else content_rgb
        with torch.no_grad():
            content_target = self._features(model, seen)[params.content_layer].float()
        area = size[0] * size[1] * params.style_scale**2
        grams = [
            self._style_grams(model, params, style, key, fit_area(*style.size, area), content_rgb)
            for style, key in zip(styles, keys)
        ]
        return _Scale(content_target, blend_grams(grams, blend) if len(grams) > 1 else grams[0], content_rgb)

    @staticmethod
    def _luminance_only(params: StyleParams) -> bool:
        return params.preserve_colors and params.color_method == "luminance"

    # -- the job -------------------------------------------------------------------------------
    def stylize(
        self,
        content: Image.Image,
        styles: Sequence[Image.Image],
        params: StyleParams = StyleParams(),
        *,
        style_keys: Sequence[str | None] | None = None,
        init_image: Image.Image | None = None,
        callback: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> StyleResult:
        """Stylize RGB `content` with one or more RGB `styles`.

        style_keys: optional cache key per style image (e.g. 'preset:starry@<mtime>'); style targets
        (Gram matrices) are cached per key, size and layer set. None = key by a hash of the pixels.
        Raises ParamError for impossible parameters, Cancelled if `cancel` is set.
        """
        t_start = time.perf_counter()
        if not styles:
            raise ParamError("at least one style image is needed")
        if params.style_blend is not None and len(params.style_blend) != len(styles):
            raise ParamError(f"got {len(params.style_blend)} blend weights for {len(styles)} style images")
        if params.init == "image" and init_image is None:
            raise ParamError("init 'image' needs an init image")
        content = content.convert("RGB")
        styles = [s.convert("RGB") for s in styles]
        keys = [k or pixel_key(s) for s, k in zip(styles, style_keys or [None] * len(styles))]
        blend = params.style_blend or tuple(1.0 for _ in styles)
        sizes = scale_sizes(*content.size, params.size, params.scales)
        generator = torch.Generator().manual_seed(params.seed if params.seed is not None else 0)
        if params.seed is None:
            generator.seed()

        model = self._model(params)
        luminance_only = self._luminance_only(params)
        layer_weights = dict(zip(params.style_layers, params.layer_weights))
        beta = params.beta * BACKBONE_STYLE_GAIN[params.backbone]
        caps = iteration_caps(len(sizes), params.steps)
        clock = Clock(sizes, caps)
        timings: dict[str, float] = {"setup": 0.0}
        x: torch.Tensor | None = None
        iterations = evaluations = 0

        for index, size in enumerate(sizes):
            t_scale = time.perf_counter()
            scale = self._prepare_scale(model, params, content, styles, keys, blend, size)
            timings["setup"] += time.perf_counter() - t_scale
            x = self._initial(params, scale, size, x, init_image, generator, luminance_only)

            def evaluate(image: torch.Tensor, scale: _Scale = scale) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
                seen = image.expand(-1, 3, -1, -1) if luminance_only else image
                return total_cost(
                    activations=self._features(model, seen), content_target=scale.content_target,
                    content_layer=params.content_layer, grams_target=scale.grams, layer_weights=layer_weights,
                    alpha=params.alpha, beta=beta, tv_weight=params.tv_weight, image=image,
                )

            def render(max_side: int, image: torch.Tensor, scale: _Scale = scale,
                       size: tuple[int, int] = size) -> Image.Image:
                # Bound now: a callback may keep a Progress and ask for its preview after this scale.
                return to_image(self._finish(image, scale.content_rgb, luminance_only, fit_long_side(*size, max_side)))

            x, losses, done, evals = self._optimize(
                x, evaluate, params, caps[index], index, len(sizes), size, clock, render, callback, cancel)
            iterations += done
            evaluations += evals
            timings[f"scale{index}"] = time.perf_counter() - t_scale

        assert x is not None
        image = to_image(self._finish(x, scale.content_rgb, luminance_only, sizes[-1]))
        timings["total"] = time.perf_counter() - t_start
        timings["optimize"] = timings["total"] - timings["setup"]
        return StyleResult(image, losses, timings, iterations, evaluations, sizes, str(self._device))

    def _initial(
        self,
        params: StyleParams,
        scale: _Scale,
        size: tuple[int, int],
        previous: torch.Tensor | None,
        init_image: Image.Image | None,
        generator: torch.Generator,
        luminance_only: bool,
    ) -> torch.Tensor:
        if previous is not None:
            x = resize_tensor(previous, size)  # coarse-to-fine: start from the upsampled result
        elif init_image is not None:
            x = to_tensor(resize_image(init_image.convert("RGB"), size)).to(self._device)
        elif params.init == "noise":
            x = (torch.rand((1, 3, size[1], size[0]), generator=generator) * 255).to(self._device)
        else:
            x = scale.content_rgb.clone()
        if luminance_only and x.shape[1] == 3:
            x = luminance(x).clamp(0, 255)
        return x.contiguous()

    @staticmethod
    def _finish(
        x: torch.Tensor, content_rgb: torch.Tensor, luminance_only: bool, size: tuple[int, int]
    ) -> torch.Tensor:
        x = x.detach()
        if luminance_only:
            x = with_content_chroma(grey_rgb(x), content_rgb)
        return resize_tensor(x.float(), size)

    def _optimize(
        self,
        x0: torch.Tensor,
        evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]],
        params: StyleParams,
        cap: int,
        index: int,
        num_scales: int,
        size: tuple[int, int],
        clock: Clock,
        render: Callable[[int, torch.Tensor], Image.Image],
        callback: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> tuple[torch.Tensor, dict[str, float], int, int]:
        """Optimise one scale; returns the best evaluated image (in range), its losses, iterations, evaluations.

        L-BFGS runs with a strong-Wolfe line search: without one it diverged on the course-normalised
        cost (equal layer weights) within two iterations. Each step() is one iteration; its first
        iteration gets a learning rate that makes a sensible first move.
        """
        x = x0.detach().clone().requires_grad_(True)
        lbfgs = params.optimizer == "lbfgs"
        if lbfgs:
            opt: torch.optim.Optimizer = torch.optim.LBFGS(
                [x], lr=1.0, max_iter=1, max_eval=cap * 2, history_size=50,
                tolerance_grad=1e-12, tolerance_change=1e-12, line_search_fn="strong_wolfe")
        else:
            opt = torch.optim.Adam([x], lr=params.learning_rate)
        run = _ScaleRun(best_x=x.detach().clone())

        def closure() -> torch.Tensor:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            with torch.no_grad():
                seen = run.recall(x)
                if seen is not None:
                    return seen
                x.clamp_(0, 255)  # keep pixels in range at every evaluation (projection)
            opt.zero_grad(set_to_none=True)
            loss, parts = evaluate(x)
            loss.backward()
            with torch.no_grad():
                # Projected gradient: at a bound, a component that points out of the box is dropped,
                # so the optimiser's model of the objective does not chase pixels it cannot move.
                g = x.grad
                g.masked_fill_(((x <= 0) & (g > 0)) | ((x >= 255) & (g < 0)), 0.0)
            run.record(x, loss, parts)
            return loss

        try:
            if lbfgs:
                # torch's first L-BFGS step is lr * min(1, 1/||g||_1) along -g: pick lr so that the
                # steepest pixel moves FIRST_STEP_PIXELS (the evaluation is reused by step()).
                closure()
                g = x.grad
                opt.param_groups[0]["lr"] = FIRST_STEP_PIXELS * max(1.0, g.abs().sum().item()) / max(
                    g.abs().max().item(), 1e-12)
            for done in range(1, cap + 1):
                opt.step(closure)
                if lbfgs and done == 1:
                    opt.param_groups[0]["lr"] = 1.0
                run.history.append(run.best_loss)
                clock.tick(index, done)
                if callback is not None:
                    losses = run.losses()  # the iteration's one device sync for progress
                    callback(Progress(
                        scale=index, num_scales=num_scales, iteration=clock.iterations, total=clock.total,
                        losses=losses, elapsed=clock.elapsed(), eta=clock.eta(index, done), size=size,
                        _render=lambda side, _x=run.best_x: render(side, _x),
                    ))
                if plateaued(run.history, params.early_stop):
                    break
        except _Diverged:
            log.warning("non-finite loss at scale %d after %d iterations; keeping the best image",
                        index, len(run.history))
        clock.finish_scale(index, len(run.history))
        return run.best_x.clamp(0, 255), run.losses(), len(run.history), run.evaluations


@dataclass
class _ScaleRun:
    """What one scale's optimisation remembers: the best point so far and the latest evaluations.

    L-BFGS asks again for points its line search already evaluated (at the start of each step(), and
    when the search settles on an earlier trial point); `recall` answers those without a forward pass.
    """

    best_x: torch.Tensor
    best_loss: float = math.inf
    best_parts: dict[str, torch.Tensor] = field(default_factory=dict)
    evaluations: int = 0
    history: list[float] = field(default_factory=list)
    """Best loss at the end of each iteration."""
    recent: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    """(x, grad, loss) of the last few evaluations, newest last."""

    RECENT = 4

    def recall(self, x: torch.Tensor) -> torch.Tensor | None:
        """The loss (and x.grad) of a point evaluated lately; x is compared as the evaluation saw it, in range."""
        if not self.recent:
            return None
        seen_as = x.clamp(0, 255)
        for seen_x, grad, loss in reversed(self.recent):
            if torch.equal(seen_as, seen_x):
                x.grad = grad.clone()
                return loss
        return None

    def record(self, x: torch.Tensor, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        self.evaluations += 1
        value = loss.item()  # sync point, once per evaluation: the line search needs the value anyway
        if not math.isfinite(value):
            raise _Diverged
        evaluated = x.detach().clone()
        if value < self.best_loss:
            self.best_loss, self.best_x = value, evaluated
            self.best_parts = {k: v.detach() for k, v in parts.items()}
        self.recent = [*self.recent[1 - self.RECENT:], (evaluated, x.grad.detach().clone(), loss.detach())]

    def losses(self) -> dict[str, float]:
        """The best point's losses as floats: one transfer from the device for all of them."""
        if not self.best_parts:
            return {"total": self.best_loss}
        names = list(self.best_parts)
        values = torch.stack([self.best_parts[k].float().reshape(()) for k in names]).tolist()
        return {"total": self.best_loss, **dict(zip(names, values))}


class _Diverged(Exception):
    """Internal: the loss became non-finite."""
