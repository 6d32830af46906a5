"""Colour preservation (Gatys et al., "Preserving Color in Neural Artistic Style Transfer", 2016).

Two methods, both pure functions on (N, 3, H, W) RGB tensors in 0-255:
- luminance-only transfer: style transfer runs on luminance (Y of YIQ); the output keeps the
  content's chroma (I, Q). The style's luminance is first matched in mean/std to the content's.
- colour matching: the style image's colours are mapped (mean and covariance) onto the content's
  before the style targets are computed, so the whole optimisation sees the content's palette.
"""
from __future__ import annotations

import torch

# NTSC YIQ (FCC 1953 coefficients); the inverse is computed, so the round trip is exact in float.
_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ],
    dtype=torch.float64,
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ).float()
_RGB_TO_YIQ = _RGB_TO_YIQ.float()  # float32: MPS has no float64


def _apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(x), x)


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    return _apply(_RGB_TO_YIQ, x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return _apply(_YIQ_TO_RGB, x)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Y of YIQ, shape (N, 1, H, W)."""
    return rgb_to_yiq(x)[:, :1]


def grey_rgb(y: torch.Tensor) -> torch.Tensor:
    """A luminance image as 3 equal channels (what the VGG sees in luminance-only mode)."""
    return y.expand(-1, 3, -1, -1).contiguous()


def match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's luminance to the content's mean and standard deviation."""
    s_mean, s_std = style_y.mean(), style_y.std().clamp_min(1e-6)
    return (style_y - s_mean) * (content_y.std() / s_std) + content_y.mean()


def with_content_chroma(output: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The output's luminance combined with the content's chroma (I, Q); shapes must agree."""
    yiq = rgb_to_yiq(content)
    yiq[:, :1] = luminance(output)
    return yiq_to_rgb(yiq).clamp(0, 255)


def _sqrtm(cov: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    vals = vals.clamp_min(1e-6)
    return vecs @ torch.diag(vals.rsqrt() if inverse else vals.sqrt()) @ vecs.T


def match_colors(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Recolour `source` so its pixel mean and covariance equal `target`'s (symmetric matrix square roots).

    Computed in float64 on the CPU (MPS has no float64; the 3x3 statistics are cheap anywhere).
    """
    src = source[0].detach().cpu().double().reshape(3, -1)
    tgt = target[0].detach().cpu().double().reshape(3, -1)
    mu_s, mu_t = src.mean(1, keepdim=True), tgt.mean(1, keepdim=True)
    cov_s = torch.cov(src) + 1e-5 * torch.eye(3, dtype=src.dtype)
    cov_t = torch.cov(tgt) + 1e-5 * torch.eye(3, dtype=src.dtype)
    mapped = _sqrtm(cov_t) @ _sqrtm(cov_s, inverse=True) @ (src - mu_s) + mu_t
    return mapped.reshape(source.shape).to(source).clamp(0, 255)
