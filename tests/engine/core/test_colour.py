"""Colour preservation maths."""
import torch

from nst_engine.core.colour import luminance, match_colors, match_luminance, rgb_to_yiq, with_content_chroma, yiq_to_rgb


def test_yiq_round_trip_and_luminance_weights():
    x = torch.rand(1, 3, 5, 4) * 255
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-3)
    pixel = torch.tensor([100.0, 50.0, 200.0]).view(1, 3, 1, 1)
    assert luminance(pixel).item() == torch.tensor(0.299 * 100 + 0.587 * 50 + 0.114 * 200).item()
    grey = torch.full((1, 3, 2, 2), 77.0)
    assert torch.allclose(rgb_to_yiq(grey)[:, 1:], torch.zeros(1, 2, 2, 2), atol=1e-4)  # no chroma


def test_with_content_chroma_keeps_output_luminance_and_content_chroma():
    # Mid-tone luminance and mild chroma, so the combination stays inside 0-255 (it is clamped there).
    g = torch.Generator().manual_seed(0)
    out = torch.rand(1, 3, 6, 6, generator=g) * 60 + 100
    content = torch.rand(1, 3, 6, 6, generator=g) * 40 + 100
    mixed = with_content_chroma(out, content)
    assert torch.allclose(luminance(mixed), luminance(out), atol=0.5)
    assert torch.allclose(rgb_to_yiq(mixed)[:, 1:], rgb_to_yiq(content)[:, 1:], atol=0.5)


def test_match_luminance_moves_mean_and_std():
    style, content = torch.rand(1, 1, 8, 8) * 50, torch.rand(1, 1, 8, 8) * 200 + 30
    matched = match_luminance(style, content)
    assert abs(matched.mean() - content.mean()) < 1e-3
    assert abs(matched.std() - content.std()) < 1e-3


def test_match_colors_takes_the_targets_mean_and_covariance():
    torch.manual_seed(0)
    source = torch.rand(1, 3, 16, 16) * torch.tensor([200.0, 40.0, 30.0]).view(1, 3, 1, 1)  # reddish
    mix = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    target = torch.einsum("ij,njhw->nihw", mix, torch.rand(1, 3, 16, 16) * 150) + 40
    mapped = match_colors(source, target)
    flat_m, flat_t = mapped[0].reshape(3, -1).double(), target[0].reshape(3, -1).double()
    assert torch.allclose(flat_m.mean(1), flat_t.mean(1), atol=0.05)
    assert torch.allclose(torch.cov(flat_m), torch.cov(flat_t), rtol=0.01, atol=0.5)
