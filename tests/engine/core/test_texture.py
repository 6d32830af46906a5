"""Texture synthesis: the texture-job parameters, tiles that wrap, and the style alone from noise."""
import numpy as np
import pytest
import torch
from PIL import Image

from nst_engine.core.params import ParamError, StyleParams
from nst_engine.core.pixels import resize_tensor
from nst_engine.core.texture import (
    check_painting,
    noise_image,
    seam_ratio,
    style_loss,
    synthesize,
    texture_params,
    tile_side,
)

FAST = dict(steps=25, seed=0, early_stop=0)


def test_tile_side_makes_every_scale_a_multiple():
    assert tile_side(256, 3, 16) == 256  # 64, 128, 256: all multiples of 16
    assert tile_side(200, 3, 16) == 192  # unit 64: 200 / 64 = 3.1
    assert tile_side(230, 3, 16) == 256  # 3.6 rounds up
    assert tile_side(40, 1, 16) == 32  # 2.5 rounds to even
    assert tile_side(10, 2, 16) == 32  # never below one unit


def test_texture_params_weigh_only_the_style_and_start_from_noise():
    p = texture_params(StyleParams(size=100, strength=9, preserve_colors=True))
    assert (p.alpha, p.beta, p.init, p.preserve_colors) == (0.0, 1.0, "noise", False)
    assert p.content_layer == "relu5_1"  # cut the network at the deepest style layer
    assert p.size == 100 and p.scales is None
    shallow = texture_params(StyleParams(style_layers=("relu2_1", "relu1_1")))
    assert shallow.content_layer == "relu2_1"


def test_tileable_params_round_the_side_and_fix_the_scales():
    p = texture_params(StyleParams(size=200, tileable=True))
    assert (p.size, p.scales) == (192, 2)  # auto scales at 200 px: 2, unit 32
    p = texture_params(StyleParams(size=40, scales=3, tileable=True))
    assert (p.size, p.scales) == (32, 2)  # three halvings of a multiple of 16 need 64 px; two fit
    p = texture_params(StyleParams(size=256, tileable=True, style_layers=("relu1_1", "relu2_1")))
    assert (p.size, p.scales) == (256, 3)  # relu2_1 only needs even sides


def test_wrapped_resize_equals_resizing_the_repeated_tile():
    torch.manual_seed(0)
    tile = torch.rand(1, 3, 12, 16) * 255
    wrapped = resize_tensor(tile, (32, 24), wrap=True)
    repeated = resize_tensor(tile.repeat(1, 1, 3, 3), (96, 72))
    assert wrapped.shape == (1, 3, 24, 32)
    assert torch.allclose(wrapped, repeated[..., 24:48, 32:64], atol=1e-3)
    plain = resize_tensor(tile, (32, 24))
    assert not torch.allclose(plain[..., :, :2], repeated[..., 24:48, 32:34], atol=1.0)  # edges differ without wrap


def test_seam_ratio_by_hand():
    ramp = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1)), "L")
    assert seam_ratio(ramp) == pytest.approx(252 / 4)  # the ramp jumps back: 252 against steps of 4
    triangle = np.abs(np.arange(64) - 32) * 3  # 96, 93, ... 0 ... 93, then back to 96: every step is 3
    periodic = Image.fromarray((triangle[None, :] + triangle[:, None]).astype(np.uint8), "L")
    assert seam_ratio(periodic) == pytest.approx(1.0)


def test_a_painting_too_small_is_refused_in_words():
    with pytest.raises(ParamError, match=r"too small \(20x64\).*at least 32 px"):
        check_painting((20, 64))
    check_painting((32, 32))


def test_texture_matches_the_style_far_better_than_noise(stylizer, style_image):
    params = StyleParams(size=48, **FAST)
    result = synthesize(stylizer, style_image, params)
    assert result.image.size == (48, 48)
    assert result.losses["content"] == 0.0 and result.losses["style"] == pytest.approx(result.losses["total"])
    start = style_loss(stylizer, noise_image(48, 48), style_image, params)
    reached = style_loss(stylizer, result.image, style_image, params)
    assert reached < 0.1 * start
    assert reached == pytest.approx(result.losses["style"], rel=0.05)  # the same cost (8-bit rounding aside)


def test_same_seed_same_texture_other_seed_other_texture(stylizer, style_image):
    a = synthesize(stylizer, style_image, StyleParams(size=32, steps=3, seed=1, early_stop=0)).image
    b = synthesize(stylizer, style_image, StyleParams(size=32, steps=3, seed=1, early_stop=0)).image
    c = synthesize(stylizer, style_image, StyleParams(size=32, steps=3, seed=2, early_stop=0)).image
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_a_tileable_cost_has_no_special_place(stylizer, style_image):
    """With circular padding the cost of a tile does not change when it is rolled (by whole pooling
    cells): no column is an edge, so the optimiser has no reason to treat the wrap differently."""
    image = noise_image(64, 48, seed=3)
    rolled = Image.fromarray(np.roll(np.asarray(image), (16, 32), axis=(0, 1)))
    tile = StyleParams(size=64, tileable=True)
    assert style_loss(stylizer, rolled, style_image, tile) == pytest.approx(
        style_loss(stylizer, image, style_image, tile), rel=1e-4)
    plain = StyleParams(size=64)
    assert style_loss(stylizer, rolled, style_image, plain) != pytest.approx(
        style_loss(stylizer, image, style_image, plain), rel=1e-3)


def test_tileable_texture_has_no_seam(stylizer, style_image):
    tile = synthesize(stylizer, style_image, StyleParams(size=64, scales=2, tileable=True, **FAST)).image
    assert tile.size == (64, 64)
    assert seam_ratio(tile) < 1.5  # the wrap step is like any step inside (a painting's seam: ~2.2)


def test_a_tile_takes_its_targets_from_its_own_network(style_image):
    from nst_engine.core.optimize import Stylizer
    from nst_engine.core.params import EngineOptions

    fresh = Stylizer(EngineOptions(device="cpu"))
    tile = StyleParams(size=32, steps=3, seed=0, early_stop=0, tileable=True)
    alone = synthesize(fresh, style_image, tile).image
    warmed = Stylizer(EngineOptions(device="cpu"))
    synthesize(warmed, style_image, StyleParams(size=32, steps=3, seed=0, early_stop=0))  # zero-padded targets
    after_a_plain_one = synthesize(warmed, style_image, tile).image
    assert np.array_equal(np.asarray(alone), np.asarray(after_a_plain_one))
    assert len(warmed.style_cache) == 2
