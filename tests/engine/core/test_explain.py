"""The explain sheet's maths by hand (ordering, patches, per-layer targets), then one tiny real run."""
import numpy as np
import pytest
import torch
from PIL import Image

from nst_engine.core.explain import (
    Explainer,
    analysed,
    cluster_order,
    correlation,
    explain_params,
    patch_box,
    reconstruction_layers,
    stage_params,
    stage_plan,
    strongest_channels,
    style_matrix_view,
    top_patches,
)
from nst_engine.core.params import STYLE_LAYERS, ParamError, StyleParams
from nst_engine.core.sheet import colormap, contrast, heatmap_image, render_sheet, wrap


def test_reconstructions_match_layers_one_to_l():
    assert reconstruction_layers(STYLE_LAYERS) == [
        ("relu1_1",),
        ("relu1_1", "relu2_1"),
        ("relu1_1", "relu2_1", "relu3_1"),
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1"),
        STYLE_LAYERS,
    ]


def test_stage_params_weigh_the_layers_equally_and_cut_the_network():
    base = StyleParams(size=128, style_layer_weights=(5, 4, 3, 2, 1), tileable=True)
    p = stage_params(base, ("relu1_1", "relu2_1", "relu3_1"))
    assert p.style_layers == ("relu1_1", "relu2_1", "relu3_1")
    assert p.layer_weights == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert p.content_layer == "relu3_1" and p.alpha == 0.0 and p.init == "noise"
    assert not p.tileable and p.size == 128


def test_stage_plan_takes_the_targets_at_the_analysed_size():
    plan = stage_plan((256, 192), StyleParams(size=128, steps=7, seed=4))
    assert [p.style_layers for p in plan] == reconstruction_layers(STYLE_LAYERS)
    # The style image covers style_scale^2 x 128^2 = 256 x 192 pixels: the painting as analysed.
    assert all(p.style_scale == pytest.approx((256 * 192) ** 0.5 / 128) for p in plan)
    assert all((p.size, p.steps, p.seed, p.alpha) == (128, 7, 4, 0.0) for p in plan)
    assert stage_plan((2000, 2000), StyleParams(size=128))[0].style_scale == 4.0  # the largest allowed


def test_strongest_channels_by_the_diagonal_ties_to_the_lower_index():
    gram = torch.diag(torch.tensor([1.0, 5.0, 3.0, 5.0, 0.0]))
    assert strongest_channels(gram, 3) == [1, 3, 2]
    assert strongest_channels(gram, 9) == [1, 3, 2, 0, 4]


def test_correlation_divides_by_both_energies():
    # Channel activations a = (2, 0), b = (1, 0), c = (0, 3) over two positions: G = F F^T.
    f = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    corr = correlation(f @ f.T)
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.float32)
    assert torch.allclose(corr, expected)  # a silent channel correlates with nothing, not NaN


def test_cluster_order_puts_channels_that_fire_together_side_by_side():
    # 0 and 2 fire together, and 1 and 3; each pair is almost unrelated to the other.
    s = torch.tensor([[1.0, 0.1, 0.9, 0.1],
                      [0.1, 1.0, 0.2, 0.8],
                      [0.9, 0.2, 1.0, 0.1],
                      [0.1, 0.8, 0.1, 1.0]])
    order = cluster_order(s)
    assert sorted(order) == [0, 1, 2, 3]
    assert {frozenset(order[:2]), frozenset(order[2:])} == {frozenset({0, 2}), frozenset({1, 3})}
    # The two pairs meet where they are most alike: 2 (of the first pair) next to 1 (of the second).
    assert order in ([0, 2, 1, 3], [3, 1, 2, 0])


def test_cluster_order_recovers_shuffled_blocks():
    blocks = [3, 4, 2]
    n = sum(blocks)
    s = torch.full((n, n), 0.05)
    start = 0
    for size in blocks:
        s[start:start + size, start:start + size] = 0.9
        start += size
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    shuffled = s[perm][:, perm]
    order = cluster_order(shuffled)
    labels = [int(np.searchsorted(np.cumsum(blocks), perm[i].item(), side="right")) for i in order]
    runs = [labels[0]] + [b for a, b in zip(labels, labels[1:]) if a != b]
    assert sorted(runs) == [0, 1, 2]  # each block one contiguous run
    assert cluster_order(torch.ones(1, 1)) == [0]


def test_style_matrix_view_keeps_the_busiest_channels_in_the_order_shown():
    torch.manual_seed(0)
    f = torch.rand(6, 50) * torch.tensor([1.0, 4.0, 0.1, 3.0, 2.0, 0.2])[:, None]
    gram = f @ f.T
    view = style_matrix_view(gram, 4)
    assert sorted(view.channels) == [0, 1, 3, 4]
    corr = correlation(gram)
    for i, a in enumerate(view.channels):
        for j, b in enumerate(view.channels):
            assert view.matrix[i, j] == pytest.approx(corr[a, b].item())


def test_patch_box_is_the_receptive_field_around_the_unit():
    assert patch_box(5, 5, "relu1_1", (64, 64)) == (4, 4, 7, 7)  # 3 px around pixel 5
    # relu2_1: 10 px, stride 2. Unit column 3 is centred on pixel 6.5: pixels 2..11.
    # Row 0's field (-4..5) sticks out of the image: it is shifted in to 0..9.
    assert patch_box(0, 3, "relu2_1", (64, 64)) == (2, 0, 12, 10)
    assert patch_box(3, 31, "relu2_1", (64, 64)) == (54, 2, 64, 12)  # shifted in from the right
    assert patch_box(2, 2, "relu5_1", (100, 120)) == (0, 0, 100, 120)  # 156 px: the whole image


def test_patch_box_matches_the_pixels_that_move_the_unit():
    from nst_engine.core.vgg import build_vgg19

    net = build_vgg19(("relu3_1",), pooling="avg")  # average pooling spreads gradient over every input
    x = (torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255).requires_grad_(True)
    a = net(x)["relu3_1"]
    channel = int(a[0, :, 8, 7].argmax())
    a[0, channel, 8, 7].backward()
    rows, cols = np.nonzero(x.grad[0].abs().sum(0).numpy())
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == patch_box(8, 7, "relu3_1", (64, 64))


def test_top_patches_strongest_first_without_near_duplicates():
    a = torch.zeros(8, 8)
    a[1, 1], a[1, 2], a[6, 6], a[4, 0], a[0, 7] = 9.0, 8.0, 7.0, 7.0, -1.0
    found = top_patches(a, "relu2_1", (16, 16), count=5)  # relu2_1: 10 px field, stride 2: radius 3 units
    assert [p.unit for p in found] == [(1, 1), (4, 0), (6, 6)]  # (1, 2) is a near duplicate; ties in reading order
    assert [p.value for p in found] == [9.0, 7.0, 7.0]
    assert found[0].box == patch_box(1, 1, "relu2_1", (16, 16))
    assert top_patches(torch.zeros(4, 4), "relu1_1", (4, 4)) == []  # nothing fires: nothing to show


def test_analysed_painting_is_shrunk_never_blown_up():
    assert analysed(Image.new("RGB", (1000, 500))).size == (256, 128)
    assert analysed(Image.new("RGB", (60, 40))).size == (60, 40)


def test_colormap_and_heatmap_by_hand():
    assert colormap(0.0) == (0, 0, 4) and colormap(1.0) == (252, 253, 191) and colormap(2.0) == colormap(1.0)
    assert colormap(0.5) == (181, 57, 116)  # halfway between the 3rd and 4th anchors
    m = torch.tensor([[1.0, 0.2], [0.2, 1.0]])
    c = contrast(torch.tensor([[1.0, 0.3, 0.5], [0.3, 1.0, 0.4], [0.5, 0.4, 1.0]]), low=0.0, high=1.0)
    assert torch.allclose(c, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.5, 1.0]]))
    # One near-duplicate pair (0.99) does not squeeze the rest: between the 5 % and 95 % quantiles.
    m20 = torch.full((20, 20), 0.5)
    m20[torch.arange(20) % 2 == 0] = 0.4
    m20[0, 1] = m20[1, 0] = 0.99
    m20.fill_diagonal_(1.0)
    stretched = contrast(m20)
    assert stretched[2, 3] == 0.0 and stretched[3, 2] == 1.0 and stretched[0, 1] == 1.0
    image = heatmap_image(m, side=8)
    assert image.size == (8, 8) and image.getpixel((0, 0)) == colormap(1.0) and image.getpixel((7, 0)) == colormap(0.2)


def test_wrap_keeps_lines_within_the_width():
    from PIL import ImageFont

    font = ImageFont.load_default(size=15)
    lines = wrap("colours and fine grain of the painting", font, 90)
    assert len(lines) > 1 and all(font.getlength(line) <= 90 for line in lines)
    assert " ".join(lines) == "colours and fine grain of the painting"


def test_explainer_builds_every_layer_and_caches_the_sheet(stylizer, style_image):
    explainer = Explainer(stylizer)
    progress = []
    params = explain_params(size=32, steps=2)
    first = explainer.explain(style_image, params, key="preset:stripes", callback=progress.append)
    assert [v.layer for v in first.layers] == list(STYLE_LAYERS) and not first.cached
    assert [v.receptive_field for v in first.layers] == [3, 10, 24, 68, 156]
    for view in first.layers:
        assert view.reconstruction.size == (32, 32) and view.style_loss > 0
        assert len(view.matrix.channels) == 32 and view.matrix.matrix.shape == (32, 32)
        assert len(view.patches) == 3 and all(len(found) >= 1 for _, found in view.patches)
        for _, found in view.patches:
            for patch in found:
                left, top, right, bottom = patch.box
                assert 0 <= left < right <= first.painting.width and 0 <= top < bottom <= first.painting.height
    # One progress stream over all five reconstructions: 'scale' counts the layers.
    assert [p.scale for p in progress] == sorted(p.scale for p in progress)
    assert {p.scale for p in progress} == set(range(5)) and all(p.num_scales == 5 for p in progress)
    assert [p.iteration for p in progress] == list(range(1, len(progress) + 1))
    assert progress[-1].total == progress[-1].iteration and progress[-1].eta == 0
    again = explainer.explain(style_image, params, key="preset:stripes")
    assert again.cached and again.layers is first.layers
    sheet = render_sheet(first, "stripes")
    assert sheet.mode == "RGB" and 800 <= sheet.width <= 1000 and sheet.width / sheet.height > 1.3
    assert np.asarray(sheet).std() > 30  # pictures, not an empty frame


def test_explainer_refuses_a_tiny_painting(stylizer):
    with pytest.raises(ParamError, match="too small"):
        Explainer(stylizer).explain(Image.new("RGB", (16, 16)), explain_params(size=32, steps=1))
