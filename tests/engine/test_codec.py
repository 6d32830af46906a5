"""nst_engine.images.codec: safe decode of awkward files and budget-fitting encode."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from nst_engine.images import codec
from nst_engine.images.codec import DecodedImage, ImageError, decode_image, encode_image, read_image_file


def _pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.int16)


@pytest.mark.parametrize("kind,fmt", [
    ("jpeg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("bmp", "BMP"), ("tiff", "TIFF"),
])
def test_good_formats_decode_to_rgb(samples, kind, fmt):
    decoded = decode_image(getattr(samples, kind)())
    assert isinstance(decoded, DecodedImage)
    assert decoded.format == fmt
    assert decoded.rgb.mode == "RGB"
    assert decoded.rgb.size == (48, 32)
    assert decoded.alpha is None
    # Same picture whatever the container (lossy ones within a tolerance).
    ref = _pixels(samples.rgb())
    # Compare the smooth gradient channels (the blue checkerboard is hard on lossy codecs at 48 px).
    tolerance = 6 if fmt in ("JPEG", "WEBP") else 0
    assert np.abs(_pixels(decoded.rgb) - ref)[..., :2].mean() <= tolerance


def test_empty_bytes(samples):
    with pytest.raises(ImageError) as err:
        decode_image(b"", name="content image")
    assert (err.value.code, err.value.status) == ("empty_file", 400)
    assert err.value.message.startswith("The content image")


def test_truncated_jpeg_is_rejected(samples):
    with pytest.raises(ImageError) as err:
        decode_image(samples.truncated_jpeg())
    assert (err.value.code, err.value.status) == ("corrupt_image", 422)
    assert "truncated" in err.value.message


def test_corrupt_png_is_rejected(samples):
    with pytest.raises(ImageError) as err:
        decode_image(samples.corrupt_png())
    assert err.value.code == "corrupt_image"


@pytest.mark.parametrize("width,height", [
    (30000, 30000),  # beyond Pillow's DecompressionBombError threshold
    (12000, 10000),  # between Pillow's warning and error thresholds: the warning must not escape
    (8000, 6000),  # below Pillow's thresholds, above ours
])
def test_pixel_bombs_are_413(samples, width, height):
    with pytest.raises(ImageError) as err:
        decode_image(samples.png_header_only(width, height))
    assert (err.value.code, err.value.status) == ("too_many_pixels", 413)
    assert "megapixels" in err.value.message


def test_max_pixels_is_configurable(samples):
    data = samples.png(48, 32)
    with pytest.raises(ImageError) as err:
        decode_image(data, max_pixels=1000)
    assert "48×32" in err.value.message
    assert decode_image(data, max_pixels=48 * 32).rgb.size == (48, 32)


def test_text_file_named_png(samples, tmp_path):
    with pytest.raises(ImageError) as err:
        decode_image(samples.text_as_png(), name="picture.png")
    assert (err.value.code, err.value.status) == ("not_an_image", 415)
    assert err.value.message.startswith("picture.png")
    path = tmp_path / "picture.png"
    path.write_bytes(samples.text_as_png())
    with pytest.raises(ImageError) as err:
        read_image_file(path)
    assert err.value.code == "not_an_image"


@pytest.mark.parametrize("kind,label", [("svg", "SVG"), ("pdf", "PDF")])
def test_known_unsupported_formats_are_named(samples, kind, label):
    with pytest.raises(ImageError) as err:
        decode_image(getattr(samples, kind)())
    assert (err.value.code, err.value.status) == ("unsupported_format", 415)
    assert label in err.value.message


def test_other_pillow_formats_are_refused(samples):
    ico = samples.encode(samples.rgb(32, 32), "ICO")
    tga = samples.encode(samples.rgb(32, 32), "TGA")
    for data in (ico, tga):
        with pytest.raises(ImageError) as err:
            decode_image(data)
        assert err.value.status == 415


def test_gif_first_frame_only(samples):
    decoded = decode_image(samples.gif_3_frames())
    assert decoded.format == "GIF"
    assert decoded.rgb.size == (40, 30)
    r, g, b = _pixels(decoded.rgb)[5, 5]
    assert r > 200 and g < 50 and b < 50  # frame 0 is red; frames 1-2 (green, blue) are ignored


def test_cmyk_jpeg(samples):
    decoded = decode_image(samples.cmyk_jpeg())
    assert decoded.rgb.mode == "RGB"
    r, g, b = _pixels(decoded.rgb)[10, 10]
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_scales_not_clips(samples):
    decoded = decode_image(samples.png16())
    assert decoded.rgb.mode == "RGB"
    row = _pixels(decoded.rgb)[0, :3, 0]
    assert row.tolist() == [0, 128, 255]


def test_rgba_alpha_is_returned(samples):
    decoded = decode_image(samples.rgba_png())
    assert decoded.rgb.mode == "RGB"
    assert decoded.alpha is not None
    assert decoded.alpha.mode == "L" and decoded.alpha.size == decoded.rgb.size
    a = _pixels(decoded.alpha)
    assert a[0, 0] == 0 and a[0, -1] == 255


def test_palette_with_transparency(samples):
    decoded = decode_image(samples.palette_transparent_png())
    assert decoded.alpha is not None
    a = _pixels(decoded.alpha)
    assert a[5, 2] == 255 and a[5, 30] == 0  # left half opaque blue, right half transparent
    assert _pixels(decoded.rgb)[5, 2].tolist() == [0, 0, 255]


def test_opaque_alpha_is_dropped(samples):
    assert decode_image(samples.la_png()).alpha is None


def test_greyscale_becomes_rgb(samples):
    decoded = decode_image(samples.greyscale_png())
    px = _pixels(decoded.rgb)
    assert decoded.rgb.mode == "RGB"
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()


@pytest.mark.parametrize("orientation,size", [(1, (48, 32)), (3, (48, 32)), (6, (32, 48)), (8, (32, 48))])
def test_exif_orientation_applied(samples, orientation, size):
    decoded = decode_image(samples.exif_rotated_jpeg(48, 32, orientation))
    assert decoded.rgb.size == size


def test_exif_orientation_6_rotates_clockwise(samples):
    decoded = decode_image(samples.exif_rotated_jpeg(48, 32, 6))
    px = _pixels(decoded.rgb)
    # Rotating 90° clockwise brings the source's bottom-left (red 0, green 255) to the top-left.
    assert px[0, 0, 0] < 30 and px[0, 0, 1] > 220


def test_icc_profile_converted_to_srgb(samples):
    # Pure red in a profile whose red primary is sRGB's green must come out green.
    decoded = decode_image(samples.icc_tagged_png((255, 0, 0)))
    r, g, b = _pixels(decoded.rgb)[3, 3]
    assert r < 10 and g > 245 and b < 10


def test_non_rgb_icc_profile_is_survivable(samples):
    decoded = decode_image(samples.lab_profile_jpeg())
    assert decoded.rgb.mode == "RGB" and decoded.rgb.size == (32, 32)


def test_read_image_file_limits(samples, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(samples.jpeg())
    assert read_image_file(path).rgb.size == (48, 32)
    with pytest.raises(ImageError) as err:
        read_image_file(path, max_bytes=100)
    assert (err.value.code, err.value.status) == ("file_too_large", 413)
    with pytest.raises(ImageError) as err:
        read_image_file(tmp_path / "missing.jpg")
    assert err.value.code == "file_not_found"
    with pytest.raises(ImageError) as err:
        read_image_file(tmp_path)
    assert err.value.code == "file_not_found"


def test_limits_are_documented_constants():
    assert codec.DEFAULT_MAX_BYTES == 25 * 1024 * 1024
    assert codec.DEFAULT_MAX_PIXELS == 40_000_000


# --- encode ---------------------------------------------------------------------------------------------


def _noise(size: int = 256, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _open(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.mark.parametrize("fmt,expected,ext,ctype", [
    ("png", "png", ".png", "image/png"),
    ("jpeg", "jpeg", ".jpg", "image/jpeg"),
    ("JPG", "jpeg", ".jpg", "image/jpeg"),
    (".webp", "webp", ".webp", "image/webp"),
])
def test_encode_formats(samples, fmt, expected, ext, ctype):
    encoded = encode_image(samples.rgb(), fmt)
    assert (encoded.format, encoded.extension, encoded.content_type) == (expected, ext, ctype)
    im = _open(encoded.data)
    assert im.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[expected]
    assert im.size == (48, 32)


def test_encode_unknown_format(samples):
    with pytest.raises(ImageError) as err:
        encode_image(samples.rgb(), "bmp")
    assert err.value.code == "unsupported_output_format"


def test_png_kept_when_it_fits():
    encoded = encode_image(_noise(), "png", byte_budget=10 * 1024 * 1024)
    assert encoded.format == "png" and encoded.size == (256, 256)


def test_png_falls_back_to_jpeg_over_budget():
    png_size = len(encode_image(_noise(), "png").data)
    budget = png_size // 2
    encoded = encode_image(_noise(), "png", byte_budget=budget)
    assert encoded.format == "jpeg"
    assert len(encoded.data) <= budget
    assert encoded.quality is not None and encoded.quality >= 80
    assert _open(encoded.data).format == "JPEG"


def test_png_with_alpha_falls_back_to_webp_with_alpha():
    alpha = Image.new("L", (64, 64), 128)  # smaller than the image: resized to it
    png_size = len(encode_image(_noise(), "png", alpha=alpha).data)
    encoded = encode_image(_noise(), "png", byte_budget=png_size // 2, alpha=alpha)
    assert encoded.format == "webp"
    im = _open(encoded.data)
    assert im.mode == "RGBA" and im.size == (256, 256)


def test_alpha_reattached_to_png(samples):
    alpha = Image.new("L", (24, 16), 0)
    alpha.paste(255, (0, 0, 12, 16))
    encoded = encode_image(samples.rgb(), "png", alpha=alpha)
    im = _open(encoded.data)
    assert im.mode == "RGBA" and im.size == (48, 32)
    a = np.asarray(im.getchannel("A"))
    assert a[10, 2] == 255 and a[10, 45] == 0


def test_explicit_jpeg_flattens_alpha_onto_white(samples):
    alpha = Image.new("L", (48, 32), 0)
    encoded = encode_image(samples.rgb(), "jpeg", alpha=alpha)
    px = np.asarray(_open(encoded.data), dtype=np.int16)
    assert px.min() > 240  # fully transparent -> white


def test_shrinks_but_never_below_half():
    budget = 30_000  # q80 at full size is ~44 kB for this noise
    encoded = encode_image(_noise(), "png", byte_budget=budget)
    assert len(encoded.data) <= budget
    assert 128 <= encoded.size[0] < 256  # shrunk, but not below half of 256
    with pytest.raises(ImageError) as err:
        encode_image(_noise(512), "png", byte_budget=20_000)  # q80 at half size (256 px) is ~44 kB
    assert err.value.code == "result_too_large"


def test_absurd_budget_is_rejected(samples):
    with pytest.raises(ImageError) as err:
        encode_image(samples.rgb(), "png", byte_budget=100)
    assert err.value.code == "invalid_byte_budget"


def test_mpo_camera_jpeg_is_a_jpeg(samples):
    buf = io.BytesIO()
    samples.rgb(48, 32).save(buf, "MPO", save_all=True, append_images=[samples.rgb(48, 32).rotate(180)])
    decoded = decode_image(buf.getvalue())
    assert decoded.format == "JPEG" and decoded.rgb.size == (48, 32)


def test_shrink_to():
    im = Image.new("RGB", (400, 100))
    assert codec.shrink_to(im, 500) is im
    assert codec.shrink_to(im, 200).size == (200, 50)
