"""The Gatys et al. cost, as pure functions on activation tensors.

Notation of the course notes: an activation a has n_C channels over n_H x n_W positions.
- Gram matrix G_kk' = sum_ij a_ijk a_ijk' (channel correlations over all positions).
- Style cost of one layer: J^l = 1/(2 n_H n_W n_C)^2 * ||G(S) - G(G)||_F^2.
- Content cost: J_content = 1/(4 n_H n_W n_C) * ||a(C) - a(G)||^2.
- J = alpha * J_content + beta * sum_l lambda_l J^l  (+ tv_weight * alpha * TV, optional).

Style and generated images may differ in size (the style image keeps its own aspect ratio), so
each Gram is divided by its own 2 n_H n_W n_C before the difference is taken. When the sizes agree
this is exactly the course formula; it also keeps the numbers small in fp32.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def gram_matrix(a: torch.Tensor) -> torch.Tensor:
    """Unnormalised Gram matrix: (n_C, n_C) = F F^T with F the (n_C, n_H*n_W) unrolled activation.

    Accepts (n_C, n_H, n_W), (1, n_C, n_H, n_W) or an already unrolled (n_C, n_H*n_W) matrix.
    """
    if a.dim() == 4:
        if a.shape[0] != 1:
            raise ValueError(f"gram_matrix takes one image, got a batch of {a.shape[0]}")
        a = a[0]
    f = a.reshape(a.shape[0], -1)
    return f @ f.transpose(0, 1)


def normalized_gram(a: torch.Tensor) -> torch.Tensor:
    """G / (2 n_H n_W n_C) for a (1, n_C, n_H, n_W) activation, computed in fp32.

    Unrolled along the tensor's memory layout (a free view for both NCHW and channels-last), and
    scaled on the small (n_C, n_C) result rather than on the activation: this runs in the hot loop.
    Entries stay far inside fp32's range (<1e12 even for relu1_1 at 4096 px).
    """
    a = a.float()
    n_c = a.shape[-3]
    n_hw = a.shape[-1] * a.shape[-2]
    if a.dim() == 4 and a.shape[0] == 1 and a.is_contiguous(memory_format=torch.channels_last):
        f = a.permute(0, 2, 3, 1).reshape(n_hw, n_c)  # (positions, channels), no copy
    else:
        f = a.reshape(n_c, n_hw).transpose(0, 1)
    return _SymmetricGram.apply(f) * (1.0 / (2 * n_hw * n_c))


class _SymmetricGram(torch.autograd.Function):
    """F^T F for F of shape (positions, channels), with a one-matmul backward.

    Autograd would differentiate through both operands separately (two matmuls and an add);
    since d(F^T F) = dF^T F + F^T dF, the gradient is F (G' + G'^T) in one.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, f: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f)
        return f.transpose(0, 1) @ f

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (f,) = ctx.saved_tensors
        return f @ (grad + grad.transpose(0, 1))


def style_layer_cost(gram_target: torch.Tensor, gram_generated: torch.Tensor) -> torch.Tensor:
    """||G_S - G_G||_F^2 for Grams already divided by 2 n_H n_W n_C (see `normalized_gram`)."""
    return (gram_target - gram_generated).pow(2).sum()


def style_layer_cost_from_activations(a_s: torch.Tensor, a_g: torch.Tensor) -> torch.Tensor:
    """The course notes' J_style^l for two activations of one layer."""
    return style_layer_cost(normalized_gram(a_s), normalized_gram(a_g))


def content_cost(a_c: torch.Tensor, a_g: torch.Tensor) -> torch.Tensor:
    """1/(4 n_H n_W n_C) * sum (a_C - a_G)^2."""
    if a_c.shape != a_g.shape:
        raise ValueError(f"content activations differ in shape: {tuple(a_c.shape)} vs {tuple(a_g.shape)}")
    n = a_c.shape[-1] * a_c.shape[-2] * a_c.shape[-3]  # n_H n_W n_C of one image
    return (a_c.float() - a_g.float()).pow(2).sum() / (4 * n)


def tv_cost(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels (in the image's own units)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    return dh + dw


def style_cost(
    grams_target: Mapping[str, torch.Tensor],
    activations: Mapping[str, torch.Tensor],
    layer_weights: Mapping[str, float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """sum_l lambda_l J^l, and the weighted per-layer terms."""
    terms = {
        layer: weight * style_layer_cost(grams_target[layer], normalized_gram(activations[layer]))
        for layer, weight in layer_weights.items()
    }
    return torch.stack(list(terms.values())).sum(), terms


def blend_grams(grams: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """One Gram target per layer for several style images.

    sum_s w_s ||G - A_s||^2 = (sum w) ||G - A_bar||^2 + const with A_bar the weighted mean of the A_s,
    so blending the targets optimises the same thing as summing per-style costs, at the price of one.
    """
    if len(grams) != len(weights):
        raise ValueError("one weight per style image is needed")
    total = float(sum(weights))
    return {layer: sum(w / total * g[layer] for g, w in zip(grams, weights)) for layer in grams[0]}


def total_cost(
    *,
    activations: Mapping[str, torch.Tensor],
    content_target: torch.Tensor,
    content_layer: str,
    grams_target: Mapping[str, torch.Tensor],
    layer_weights: Mapping[str, float],
    alpha: float,
    beta: float,
    tv_weight: float = 0.0,
    image: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """J = alpha J_content + beta J_style (+ alpha tv_weight TV(image)); returns J and the weighted parts.

    Parts: 'content', 'style', 'tv' and 'style:<layer>' (each already multiplied by its weights).
    """
    j_content = alpha * content_cost(content_target, activations[content_layer])
    j_style, per_layer = style_cost(grams_target, activations, layer_weights)
    parts = {"content": j_content, "style": beta * j_style}
    parts.update({f"style:{layer}": beta * term for layer, term in per_layer.items()})
    total = j_content + beta * j_style
    if tv_weight > 0:
        if image is None:
            raise ValueError("tv_weight needs the image")
        parts["tv"] = alpha * tv_weight * tv_cost(image)
        total = total + parts["tv"]
    return total, parts
