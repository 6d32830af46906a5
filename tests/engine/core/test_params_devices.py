"""Parameter validation, the strength dial, and device choice (more on devices in test_devices.py)."""
import pytest
import torch

from nst_engine.core.devices import DeviceUnavailable, resolve_device
from nst_engine.core.params import BASE_STYLE_RATIO, ParamError, StyleParams, style_ratio
from nst_engine.core.pixels import fit_area, fit_long_side
from nst_engine.core.schedule import scale_sizes


def test_strength_maps_to_beta_over_alpha():
    assert style_ratio(5) == BASE_STYLE_RATIO
    assert style_ratio(6) == pytest.approx(2 * style_ratio(5))
    assert StyleParams(strength=7).beta == pytest.approx(4 * BASE_STYLE_RATIO)
    assert StyleParams(content_weight=10, style_weight=40).beta == 40
    assert StyleParams(content_weight=10).beta == pytest.approx(10 * BASE_STYLE_RATIO)
    assert StyleParams().layer_weights == (0.2,) * 5


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 8}, "size"), ({"steps": 0}, "steps"), ({"strength": 11}, "strength"),
    ({"style_scale": 0}, "style scale"), ({"style_blend": (0, 0)}, "blend"),
    ({"style_layer_weights": (1.0,)}, "style layer weights"), ({"tv_weight": -1}, "tv"),
    ({"pooling": "min"}, "pooling"), ({"optimizer": "sgd"}, "optimizer"), ({"scales": 9}, "scales"),
])
def test_bad_params_are_rejected_with_a_readable_message(kwargs, message):
    with pytest.raises(ParamError, match=message):
        StyleParams(**kwargs)


def test_sizes_keep_the_aspect_ratio():
    assert fit_long_side(600, 400, 300) == (300, 200)
    assert fit_long_side(400, 600, 300) == (200, 300)
    w, h = fit_area(100, 50, 20000)
    assert (w, h) == (200, 100)


def test_scale_schedule_is_coarse_to_fine_and_automatic():
    assert scale_sizes(600, 400, 64, None) == [(64, 43)]
    assert scale_sizes(600, 400, 120, None) == [(120, 80)]
    assert scale_sizes(600, 400, 256, None) == [(64, 43), (128, 85), (256, 171)]
    assert scale_sizes(600, 400, 512, None) == [(64, 43), (128, 85), (256, 171), (512, 341)]
    assert scale_sizes(600, 400, 2048, None)[0] == (256, 171)
    assert scale_sizes(400, 400, 512, 2) == [(256, 256), (512, 512)]
    # A coarse scale of a thin image may be padded to the minimum side; the output never is.
    assert scale_sizes(1000, 100, 512, None) == [(64, 16), (128, 16), (256, 26), (512, 51)]
    with pytest.raises(ParamError, match="too thin"):
        scale_sizes(2000, 20, 512, None)


def test_device_resolution():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(DeviceUnavailable, match="not available"):
        resolve_device("cuda:99")
    with pytest.raises(DeviceUnavailable, match="unknown device"):
        resolve_device("quantum")
