"""The cost functions against hand computations (course notes' notation)."""
import pytest
import torch

from nst_engine.core.losses import (
    blend_grams,
    content_cost,
    gram_matrix,
    normalized_gram,
    style_cost,
    style_layer_cost_from_activations,
    total_cost,
    tv_cost,
)


def test_gram_matrix_course_example():
    # Two channels (rows) over two positions: G = M M^T.
    m = torch.tensor([[19.0, 20.0], [9.0, 8.0]])
    assert torch.equal(gram_matrix(m), torch.tensor([[761.0, 331.0], [331.0, 145.0]]))
    # The same activation as a (1, n_C, n_H, n_W) tensor gives the same Gram.
    assert torch.equal(gram_matrix(m.reshape(1, 2, 1, 2)), torch.tensor([[761.0, 331.0], [331.0, 145.0]]))


def test_gram_matrix_sums_over_all_positions_and_ignores_their_order():
    a = torch.rand(1, 3, 4, 5)
    g = gram_matrix(a)
    expected = torch.zeros(3, 3)
    for k in range(3):
        for k2 in range(3):
            expected[k, k2] = sum(a[0, k, i, j] * a[0, k2, i, j] for i in range(4) for j in range(5))
    assert torch.allclose(g, expected, rtol=1e-5)
    shuffled = a.reshape(1, 3, 20)[:, :, torch.randperm(20)].reshape(1, 3, 4, 5)
    assert torch.allclose(gram_matrix(shuffled), g, rtol=1e-5)


def test_gram_matrix_rejects_batches():
    with pytest.raises(ValueError):
        gram_matrix(torch.rand(2, 3, 4, 4))


def test_normalized_gram_divides_by_2_nh_nw_nc():
    a = torch.rand(1, 3, 4, 5)
    assert torch.allclose(normalized_gram(a), gram_matrix(a) / (2 * 4 * 5 * 3), rtol=1e-5)


def test_style_layer_cost_matches_the_course_formula():
    # n_C=2, n_H=1, n_W=2: J = 1/(2*1*2*2)^2 * ||G_S - G_G||_F^2
    a_s = torch.tensor([[19.0, 20.0], [9.0, 8.0]]).reshape(1, 2, 1, 2)
    a_g = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)
    g_s = torch.tensor([[761.0, 331.0], [331.0, 145.0]])
    g_g = torch.tensor([[5.0, 11.0], [11.0, 25.0]])
    expected = ((g_s - g_g) ** 2).sum() / (2 * 1 * 2 * 2) ** 2
    assert style_layer_cost_from_activations(a_s, a_g).item() == pytest.approx(expected.item(), rel=1e-6)
    assert style_layer_cost_from_activations(a_s, a_s).item() == 0.0


def test_content_cost_matches_the_course_formula():
    a_c = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # n_C=1, n_H=2, n_W=2
    a_g = torch.tensor([[[[0.0, 2.0], [5.0, 4.0]]]])
    # 1/(4*2*2*1) * (1 + 0 + 4 + 0)
    assert content_cost(a_c, a_g).item() == pytest.approx(5 / 16)
    with pytest.raises(ValueError):
        content_cost(a_c, torch.zeros(1, 1, 3, 2))


def test_style_cost_weights_each_layer():
    acts = {"a": torch.rand(1, 2, 3, 3), "b": torch.rand(1, 4, 2, 2)}
    targets = {k: normalized_gram(torch.rand_like(v)) for k, v in acts.items()}
    total, parts = style_cost(targets, acts, {"a": 0.25, "b": 2.0})
    ja = ((targets["a"] - normalized_gram(acts["a"])) ** 2).sum()
    jb = ((targets["b"] - normalized_gram(acts["b"])) ** 2).sum()
    assert parts["a"].item() == pytest.approx(0.25 * ja.item(), rel=1e-5)
    assert total.item() == pytest.approx(0.25 * ja.item() + 2.0 * jb.item(), rel=1e-5)


def test_blended_targets_optimise_the_same_as_summed_costs():
    a1, a2 = {"l": torch.rand(3, 3)}, {"l": torch.rand(3, 3)}
    w1, w2 = 0.3, 1.2
    blended = blend_grams([a1, a2], [w1, w2])["l"]

    def summed(g):
        return w1 * ((g - a1["l"]) ** 2).sum() + w2 * ((g - a2["l"]) ** 2).sum()

    def via_blend(g):
        return (w1 + w2) * ((g - blended) ** 2).sum()

    g1, g2 = torch.rand(3, 3), torch.rand(3, 3)
    # They differ by a constant only, so they have the same minimiser and the same gradients.
    assert (summed(g1) - via_blend(g1)).item() == pytest.approx((summed(g2) - via_blend(g2)).item(), rel=1e-4)


def test_tv_cost_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    # vertical diffs 2, 3 -> mean 6.5; horizontal 1, 2 -> mean 2.5
    assert tv_cost(x).item() == pytest.approx(9.0)


def test_total_cost_is_alpha_content_plus_beta_style_plus_tv():
    acts = {"c": torch.rand(1, 2, 3, 3), "s": torch.rand(1, 2, 3, 3)}
    content_target = torch.rand(1, 2, 3, 3)
    grams = {"s": normalized_gram(torch.rand(1, 2, 3, 3))}
    image = torch.rand(1, 3, 4, 4) * 255
    total, parts = total_cost(
        activations=acts, content_target=content_target, content_layer="c", grams_target=grams,
        layer_weights={"s": 1.0}, alpha=10.0, beta=40.0, tv_weight=0.5, image=image,
    )
    jc = content_cost(content_target, acts["c"]).item()
    js = ((grams["s"] - normalized_gram(acts["s"])) ** 2).sum().item()
    assert parts["content"].item() == pytest.approx(10 * jc, rel=1e-5)
    assert parts["style"].item() == pytest.approx(40 * js, rel=1e-5)
    assert parts["style:s"].item() == pytest.approx(40 * js, rel=1e-5)
    assert parts["tv"].item() == pytest.approx(10 * 0.5 * tv_cost(image).item(), rel=1e-5)
    assert total.item() == pytest.approx(10 * jc + 40 * js + parts["tv"].item(), rel=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_normalized_gram_gradient_matches_plain_autograd(channels_last):
    a = torch.rand(1, 3, 4, 5, dtype=torch.float64)
    if channels_last:
        a = a.contiguous(memory_format=torch.channels_last)
    a.requires_grad_(True)
    target = torch.rand(3, 3, dtype=torch.float64)
    ((normalized_gram(a) - target) ** 2).sum().backward()
    ours = a.grad.clone()
    b = a.detach().clone().requires_grad_(True)
    f = b.reshape(3, 20)
    (((f @ f.T) / (2 * 20 * 3) - target) ** 2).sum().backward()
    assert torch.allclose(ours, b.grad)
