"""The optimisation loop, on tiny images on the CPU."""
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from nst_engine.core.colour import rgb_to_yiq
from nst_engine.core.optimize import Cancelled, Stylizer
from nst_engine.core.params import EngineOptions, ParamError, StyleParams
from nst_engine.core.pixels import to_tensor

FAST = dict(size=40, steps=6, seed=1, early_stop=0)


def run(stylizer, content, style, **kwargs):
    progress = []
    result = stylizer.stylize(content, [style], StyleParams(**{**FAST, **kwargs}), callback=progress.append)
    return result, progress


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def test_output_size_keeps_aspect_ratio_and_loss_goes_down(stylizer, content_image, style_image):
    result, progress = run(stylizer, content_image, style_image)
    assert result.image.size == (40, 25) and result.image.mode == "RGB"
    assert result.scales == [(40, 25)]
    assert result.iterations == 6 == len(progress)
    assert result.evaluations >= result.iterations
    assert progress[-1].losses["total"] < 0.5 * progress[0].losses["total"]
    assert set(result.losses) >= {"total", "content", "style", "style:relu1_1", "style:relu5_1"}
    assert result.timings["total"] >= result.timings["optimize"] > 0


def test_progress_reports_every_iteration_with_eta_and_preview(stylizer, content_image, style_image):
    _, progress = run(stylizer, content_image, style_image, size=64, scales=2, steps=8)
    # The coarse scale only prepares the next one: it gets a quarter of the iteration cap.
    assert [p.iteration for p in progress] == list(range(1, 11))
    assert [p.scale for p in progress] == [0] * 2 + [1] * 8
    assert all(p.num_scales == 2 and p.total == 10 for p in progress)
    assert all(b.elapsed >= a.elapsed for a, b in zip(progress, progress[1:]))
    assert progress[0].eta > 0 and progress[-1].eta == 0
    assert progress[0].size == (32, 20) and progress[-1].size == (64, 40)


def test_preview_is_small_and_shows_the_current_image(stylizer, content_image, style_image):
    previews = []

    def callback(p):
        previews.append(p.preview(max_side=32))

    stylizer.stylize(content_image, [style_image], StyleParams(**FAST), callback=callback)
    assert previews[0].size == (32, 20) and len(previews) == 6
    assert not np.array_equal(pixels(previews[0]), pixels(previews[-1]))


def test_multiscale_runs_coarse_to_fine(stylizer, content_image, style_image):
    result, _ = run(stylizer, content_image, style_image, size=64, scales=3, steps=2)
    assert result.scales == [(16, 16), (32, 20), (64, 40)]
    assert result.image.size == (64, 40)
    assert set(result.timings) >= {"scale0", "scale1", "scale2"}


def test_cancellation_stops_within_one_iteration(stylizer, content_image, style_image):
    cancel = threading.Event()
    seen = []

    def callback(p):
        seen.append(p.iteration)
        if p.iteration == 3:
            cancel.set()

    with pytest.raises(Cancelled):
        stylizer.stylize(content_image, [style_image], StyleParams(**{**FAST, "steps": 50}),
                         callback=callback, cancel=cancel)
    assert seen == [1, 2, 3]


def test_first_lbfgs_iteration_needs_few_evaluations(stylizer, content_image, style_image):
    # torch's own first step (lr/||g||_1) made the line search widen it for ~7 evaluations.
    result, _ = run(stylizer, content_image, style_image, steps=1)
    assert result.iterations == 1 and result.evaluations <= 3


def test_early_stop_ends_a_scale_when_the_loss_stops_improving(stylizer, content_image, style_image):
    result, _ = run(stylizer, content_image, style_image, size=32, steps=60, early_stop=0.9)
    assert result.iterations == 11  # the window is 10 iterations


def test_seed_makes_noise_runs_reproducible(stylizer, content_image, style_image):
    a, _ = run(stylizer, content_image, style_image, init="noise", seed=3)
    b, _ = run(stylizer, content_image, style_image, init="noise", seed=3)
    c, _ = run(stylizer, content_image, style_image, init="noise", seed=4)
    assert np.array_equal(pixels(a.image), pixels(b.image))
    assert not np.array_equal(pixels(a.image), pixels(c.image))


def test_init_choices_change_the_start(stylizer, content_image, style_image):
    from_content, p1 = run(stylizer, content_image, style_image, steps=1)
    from_noise, p2 = run(stylizer, content_image, style_image, steps=1, init="noise")
    assert p1[0].losses["content"] < p2[0].losses["content"]
    black = Image.new("RGB", (10, 10))
    res = stylizer.stylize(content_image, [style_image], StyleParams(**{**FAST, "steps": 1, "init": "image"}),
                           init_image=black)
    assert pixels(res.image).mean() < pixels(from_content.image).mean()
    with pytest.raises(ParamError, match="init image"):
        stylizer.stylize(content_image, [style_image], StyleParams(**{**FAST, "init": "image"}))


def test_adam_also_lowers_the_loss(stylizer, content_image, style_image):
    _, progress = run(stylizer, content_image, style_image, optimizer="adam", steps=10, learning_rate=5.0)
    assert progress[-1].losses["total"] < 0.8 * progress[0].losses["total"]


def test_strength_trades_content_for_style(stylizer, content_image, style_image):
    weak, _ = run(stylizer, content_image, style_image, strength=1)
    strong, _ = run(stylizer, content_image, style_image, strength=9)
    # Unweighted costs: divide the weighted parts back by their weights.
    weak_style = weak.losses["style"] / StyleParams(strength=1).beta
    strong_style = strong.losses["style"] / StyleParams(strength=9).beta
    assert strong_style < weak_style
    assert strong.losses["content"] > weak.losses["content"]


def test_output_pixels_stay_in_range_and_the_style_shows(stylizer, content_image, style_image):
    result, _ = run(stylizer, content_image, style_image, strength=10, steps=12)
    out = rgb_to_yiq(to_tensor(result.image))
    before = rgb_to_yiq(to_tensor(content_image.resize(result.image.size)))
    # The red/blue style pushes chroma far from the greenish photo.
    assert (out[:, 1:] - before[:, 1:]).abs().mean() > 10


def chroma(image: Image.Image) -> torch.Tensor:
    return rgb_to_yiq(to_tensor(image))[:, 1:]


@pytest.mark.parametrize("method", ["luminance", "match"])
def test_preserve_colors_keeps_the_photos_chroma(stylizer, content_image, style_image, method):
    free, _ = run(stylizer, content_image, style_image, strength=10, steps=12)
    kept, _ = run(stylizer, content_image, style_image, strength=10, steps=12, preserve_colors=True,
                  color_method=method)
    content = chroma(content_image.resize(kept.image.size, Image.Resampling.LANCZOS))
    if method == "luminance":
        # Per pixel: the chroma is the content's, up to 8-bit rounding.
        assert (chroma(kept.image) - content).abs().mean() < 3.0
        assert (chroma(free.image) - content).abs().mean() > 10.0
    else:
        # The style's palette is mapped onto the photo's: the mean colour follows the photo.
        drift_kept = (chroma(kept.image).mean((2, 3)) - content.mean((2, 3))).abs().max()
        drift_free = (chroma(free.image).mean((2, 3)) - content.mean((2, 3))).abs().max()
        assert drift_kept < 0.5 * drift_free


def test_style_blend_weights_select_and_mix_styles(stylizer, content_image, style_image):
    other = Image.new("RGB", (40, 40), (240, 240, 30))
    params = StyleParams(**FAST)
    single = stylizer.stylize(content_image, [style_image], params).image
    only_first = stylizer.stylize(content_image, [style_image, other],
                                  StyleParams(**{**FAST, "style_blend": (1.0, 0.0)})).image
    mixed = stylizer.stylize(content_image, [style_image, other], StyleParams(**{**FAST, "style_blend": (1.0, 1.0)})).image
    assert np.array_equal(pixels(single), pixels(only_first))
    assert not np.array_equal(pixels(single), pixels(mixed))
    with pytest.raises(ParamError, match="blend"):
        stylizer.stylize(content_image, [style_image], StyleParams(**{**FAST, "style_blend": (1.0, 1.0)}))


def test_style_targets_are_cached_by_key_and_size(content_image, style_image):
    s = Stylizer(EngineOptions(device="cpu"))
    params = StyleParams(**{**FAST, "steps": 1})
    s.stylize(content_image, [style_image], params, style_keys=["preset:stripes"])
    assert (s.style_cache.misses, s.style_cache.hits) == (1, 0)
    s.stylize(content_image, [style_image], params, style_keys=["preset:stripes"])
    assert (s.style_cache.misses, s.style_cache.hits) == (1, 1)
    s.stylize(content_image, [style_image], StyleParams(**{**FAST, "steps": 1, "size": 32}),
              style_keys=["preset:stripes"])
    assert s.style_cache.misses == 2  # another size, other targets
    s.stylize(content_image, [style_image.copy()], params)  # no key: keyed by pixels
    s.stylize(content_image, [style_image.copy()], params)
    assert (s.style_cache.misses, s.style_cache.hits) == (3, 2)


def test_style_scale_changes_the_targets(stylizer, content_image, style_image):
    fine, _ = run(stylizer, content_image, style_image, style_scale=0.5)
    coarse, _ = run(stylizer, content_image, style_image, style_scale=2.0)
    assert not np.array_equal(pixels(fine.image), pixels(coarse.image))


def test_tv_weight_smooths_the_output(stylizer, content_image, style_image):
    from nst_engine.core.losses import tv_cost

    rough, _ = run(stylizer, content_image, style_image, steps=10)
    smooth, _ = run(stylizer, content_image, style_image, steps=10, tv_weight=1000.0)
    assert tv_cost(to_tensor(smooth.image)) < tv_cost(to_tensor(rough.image))
    assert "tv" in smooth.losses and "tv" not in rough.losses


def test_layer_choices_and_pooling_are_used(stylizer, content_image, style_image):
    result, _ = run(stylizer, content_image, style_image, content_layer="relu2_2",
                    style_layers=("relu1_1", "relu2_1"), style_layer_weights=(1.0, 0.5))
    assert {k for k in result.losses if k.startswith("style:")} == {"style:relu1_1", "style:relu2_1"}
    maxed, _ = run(stylizer, content_image, style_image)
    averaged, _ = run(stylizer, content_image, style_image, pooling="avg")
    assert not np.array_equal(pixels(maxed.image), pixels(averaged.image))


def test_content_and_style_of_different_shapes(stylizer):
    tall = Image.new("RGB", (30, 90), (90, 120, 60))
    wide = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 100, 3), dtype=np.uint8))
    result = stylizer.stylize(tall, [wide], StyleParams(size=60, steps=3))
    assert result.image.size == (20, 60)


def test_channels_last_gives_the_same_features():
    x = torch.rand(1, 3, 40, 40) * 255
    plain = Stylizer(EngineOptions(device="cpu", channels_last=False))
    fast = Stylizer(EngineOptions(device="cpu", channels_last=True))
    params = StyleParams()
    a = plain._features(plain._model(params), x)
    b = fast._features(fast._model(params), x)
    assert b["relu3_1"].is_contiguous(memory_format=torch.channels_last)
    assert not a["relu3_1"].is_contiguous(memory_format=torch.channels_last)
    for layer in a:
        assert torch.allclose(a[layer], b[layer], rtol=1e-3, atol=1e-2 * a[layer].abs().max().item() * 1e-2)


def test_bf16_autocast_runs_the_vgg_in_bf16_with_fp32_losses(content_image, style_image):
    s = Stylizer(EngineOptions(device="cpu", bf16=True))
    feats = s._features(s._model(StyleParams()), torch.rand(1, 3, 32, 32) * 255)
    assert feats["relu1_1"].dtype == torch.bfloat16
    reference = Stylizer(EngineOptions(device="cpu"))
    ref = reference._features(reference._model(StyleParams()), torch.rand(1, 3, 32, 32) * 255)
    assert ref["relu1_1"].dtype == torch.float32
    result, progress = run(s, content_image, style_image)
    assert progress[-1].losses["total"] < 0.5 * progress[0].losses["total"]
    assert isinstance(result.losses["total"], float)


def test_compile_switch_compiles_the_vgg_and_matches_eager():
    params = StyleParams(content_layer="relu1_2", style_layers=("relu1_1",))
    eager = Stylizer(EngineOptions(device="cpu"))
    compiled = Stylizer(EngineOptions(device="cpu", compile=True))
    model = compiled._model(params)
    assert isinstance(model, torch._dynamo.eval_frame.OptimizedModule)
    x = torch.rand(1, 3, 16, 16) * 255
    a = eager._features(eager._model(params), x)["relu1_2"]
    b = compiled._features(model, x)["relu1_2"]
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-3)


def test_no_style_image_is_a_param_error(stylizer, content_image):
    with pytest.raises(ParamError, match="style"):
        stylizer.stylize(content_image, [], StyleParams(**FAST))
