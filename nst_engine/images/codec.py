"""Image files in and out, with Pillow only: capped and checked decode, EXIF orientation, ICC -> sRGB,
alpha kept aside, and an encoder that fits a byte budget.

Everything here is blocking CPU work: the service calls it from a thread, never on the event loop.
Every rejection is an `ImageError` carrying a stable `code`, a `message` a Discord user can read and an
HTTP `status`.
"""
from __future__ import annotations

import io
import logging
import os
import re
import threading
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

log = logging.getLogger(__name__)

# 25 MiB: Discord's free upload limit is 10 MiB and boosted servers allow more; a photo at the pixel limit
# below is well under this as JPEG, so anything bigger is not a photo anyone meant to send us.
DEFAULT_MAX_BYTES = 25 * 1024 * 1024
# 40 MP: above every common phone/camera default (12-24 MP; 48 MP sensors save 12 MP unless asked) while
# capping the decoded RGB buffer at ~120 MB. It is also below Pillow's own decompression-bomb threshold
# (~89 MP), so our check fires first with a clear message.
DEFAULT_MAX_PIXELS = 40_000_000

# Pillow format names we decode. MPO is what Pillow calls a JPEG with extra embedded pictures (many phone
# and camera photos), so it is a JPEG to the user.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_OPENED_FORMATS = frozenset(ALLOWED_FORMATS) | {"MPO"}
ALLOWED_FORMATS_TEXT = "JPEG, PNG, WebP, GIF, BMP or TIFF"

OutputFormat = Literal["png", "jpeg", "webp"]
_OUTPUT_ALIASES: dict[str, OutputFormat] = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
_CONTENT_TYPES: dict[OutputFormat, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_EXTENSIONS: dict[OutputFormat, str] = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}

# Lossy qualities tried in order when an output must fit a byte budget. 80 is the floor: below it JPEG
# artefacts start to fight the painted texture we just optimised for.
_QUALITY_LADDER = (95, 90, 85, 80)
# Never shrink an output below half its linear size to fit a budget: fail clearly instead.
_MIN_SCALE = 0.5
# A budget below this cannot hold a meaningful picture; it is a client bug.
_MIN_BYTE_BUDGET = 16 * 1024

# EXIF orientation tag (0x0112) -> the transpose that undoes it (as in ImageOps.exif_transpose).
_ORIENTATION_TAG = 0x0112
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Formats people send that Pillow cannot (or we will not) decode, by magic bytes: named in the message so
# the user knows what to do instead of "not an image".
_KNOWN_UNSUPPORTED: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF", "PDF"),
    (0, b"8BPS", "Photoshop (PSD)"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"qoif", "QOI"),
    (0, b"\x89HDF", "HDF"),
    (0, b"#?RADIANCE", "HDR"),
)
_FTYP_BRANDS = {
    b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"hevx": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF",
    b"avif": "AVIF", b"avis": "AVIF",
    b"qt  ": "video", b"isom": "video", b"mp41": "video", b"mp42": "video", b"M4V ": "video",
}

# `warnings.catch_warnings` swaps process-wide state, so two decoding threads must not interleave it.
_WARNINGS_LOCK = threading.Lock()

# Pillow plugins raise a zoo of exception types on hostile input (OSError for truncation, SyntaxError,
# struct.error, IndexError, ValueError, even ZeroDivisionError...). At this untrusted-input boundary any
# of them means "this file is broken", so they all become a 4xx instead of a 500.
_BROKEN_FILE_ERRORS = (Exception,)


class ImageError(ValueError):
    """A file we will not accept (or an output we cannot produce); carries what the user should read."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass
class DecodedImage:
    rgb: Image.Image
    """Mode RGB, sRGB, EXIF orientation applied."""
    alpha: Image.Image | None
    """Mode L, same size as `rgb`; None when the file has no (or only opaque) transparency."""
    format: str
    """Container format as Pillow names it ('JPEG', 'PNG', 'WEBP', 'GIF', 'BMP', 'TIFF')."""

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.size


@dataclass
class EncodedImage:
    data: bytes
    format: OutputFormat
    content_type: str
    extension: str
    """With the dot: '.png', '.jpg', '.webp'."""
    size: tuple[int, int] = (0, 0)
    """(width, height) actually encoded; smaller than the input when it was shrunk to fit the budget."""
    quality: int | None = None
    """Lossy quality used; None for PNG."""


def _subject(name: str) -> str:
    """'content image' -> 'The content image'; a file name stays as it is."""
    return name if "." in name or "/" in name else f"The {name}"


def _sniff_unsupported(data: bytes) -> str | None:
    head = data[:64]
    for offset, magic, label in _KNOWN_UNSUPPORTED:
        if head[offset:offset + len(magic)] == magic:
            return label
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "ISO media (HEIC/AVIF/video)")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml")) or b"<svg" in data[:1024].lower():
        return "SVG"
    return None


def _unidentified(data: bytes, name: str) -> ImageError:
    label = _sniff_unsupported(data)
    if label is not None:
        return ImageError(
            "unsupported_format",
            f"{_subject(name)} is in {label} format, which is not supported; "
            f"please send a {ALLOWED_FORMATS_TEXT} image.",
            415,
        )
    return ImageError(
        "not_an_image",
        f"{_subject(name)} is not an image file I can read; please send a {ALLOWED_FORMATS_TEXT} image.",
        415,
    )


def _too_many_pixels(
    name: str, size: tuple[int, int] | None, max_pixels: int, pillow_error: str = ""
) -> ImageError:
    limit = f"{max_pixels / 1e6:g} megapixels"
    claimed = re.search(r"Image size \((\d+) pixels\)", pillow_error)  # Pillow's bomb errors name the count
    if size is None and claimed:
        detail = f"has {int(claimed.group(1)) / 1e6:.0f} megapixels"
    elif size is None:
        detail = "has too many pixels"
    else:
        detail = f"is {size[0]}×{size[1]} pixels ({size[0] * size[1] / 1e6:.0f} megapixels)"
    return ImageError(
        "too_many_pixels", f"{_subject(name)} {detail}; the limit is {limit}. Please send a smaller image.", 413
    )


def _corrupt(name: str) -> ImageError:
    return ImageError(
        "corrupt_image",
        f"{_subject(name)} is truncated or damaged and cannot be decoded; please upload it again.",
        422,
    )


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image") -> DecodedImage:
    """Decode untrusted bytes into an sRGB RGB image plus optional alpha; raises ImageError for anything else."""
    if not data:
        raise ImageError("empty_file", f"{_subject(name)} is empty (0 bytes).", 400)
    im = _open_and_load(data, max_pixels, name)
    fmt = "JPEG" if im.format == "MPO" else str(im.format)
    try:
        orientation = _orientation(im)
        rgb, alpha = _to_srgb(im)
    except _BROKEN_FILE_ERRORS as exc:
        log.debug("conversion failed for %s (%s, %s): %r", name, fmt, im.mode, exc)
        raise _corrupt(name) from None
    # No im.close(): `rgb` may be `im` itself, and an in-memory file holds nothing that needs releasing.
    method = _EXIF_TRANSPOSE.get(orientation)
    if method is not None:
        rgb = rgb.transpose(method)
        alpha = alpha.transpose(method) if alpha is not None else None
    return DecodedImage(rgb=rgb, alpha=alpha, format=fmt)


def _open_and_load(data: bytes, max_pixels: int, name: str) -> Image.Image:
    """Identify, check the size on the header, then decode the first frame fully (or raise ImageError)."""
    with _WARNINGS_LOCK, warnings.catch_warnings():
        # Local and temporary: Pillow's bomb *warning* (between its 89 MP and 179 MP thresholds) becomes an
        # exception we turn into a 413; Pillow's metadata complaints (odd EXIF tags...) are not failures.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(name, None, max_pixels, str(exc)) from None
        except UnidentifiedImageError:
            raise _unidentified(data, name) from None
        except _BROKEN_FILE_ERRORS as exc:
            log.debug("open failed for %s: %r", name, exc)
            raise _corrupt(name) from None
        try:
            if im.format not in _OPENED_FORMATS:  # defensive: `formats=` already restricts this
                raise _unidentified(data, name)
            width, height = im.size
            if width < 1 or height < 1:
                raise _corrupt(name)
            if width * height > max_pixels:  # checked on the header, before any pixel is decoded
                raise _too_many_pixels(name, im.size, max_pixels)
            try:
                im.seek(0)  # GIF/TIFF/WebP/MPO: the first frame only
                im.load()  # a full decode: truncated and corrupt data fail here, not later
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise _too_many_pixels(name, im.size, max_pixels) from None
            except _BROKEN_FILE_ERRORS as exc:
                log.debug("decode failed for %s (%s): %r", name, im.format, exc)
                raise _corrupt(name) from None
        except BaseException:
            im.close()
            raise
        return im


def read_image_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Read and decode an image file, reading at most `max_bytes` (+1 to detect larger files)."""
    name = os.path.basename(os.fspath(path)) or os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageError("file_not_found", f"{name}: no such file.", 400) from None
    except IsADirectoryError:
        raise ImageError("file_not_found", f"{name} is a folder, not an image file.", 400) from None
    except OSError as exc:
        raise ImageError("unreadable_file", f"{name} cannot be read ({exc.strerror or exc}).", 400) from None
    if len(data) > max_bytes:
        raise ImageError("file_too_large", f"{name} is larger than the {_format_bytes(max_bytes)} limit.", 413)
    return decode_image(data, max_pixels=max_pixels, name=name)


def _format_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):g} MiB"
    if n >= 1024:
        return f"{n / 1024:g} KiB"
    return f"{n} bytes"


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except _BROKEN_FILE_ERRORS as exc:  # unreadable EXIF is not a reason to refuse the picture
        log.debug("ignoring unreadable EXIF: %r", exc)
        return 1
    return value if isinstance(value, int) else 1


# --- modes and colour ---------------------------------------------------------------------------------


def _split_alpha(im: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """-> (image without alpha, alpha in mode L or None). Palette/tRNS transparency becomes real alpha."""
    mode = im.mode
    if mode in ("RGBa", "La"):  # premultiplied: undo it before splitting
        im = im.convert("RGBA" if mode == "RGBa" else "LA")
        mode = im.mode
    if mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if "transparency" in im.info and mode in ("P", "L", "1", "RGB"):
        im = im.convert("RGBA" if mode in ("P", "RGB") else "LA")
        mode = im.mode
    if mode in ("RGBA", "LA"):
        alpha = im.getchannel("A")
        base = im.convert("RGB") if mode == "RGBA" else im.getchannel("L")
        if alpha.getextrema() == (255, 255):  # fully opaque: nothing to carry around
            return base, None
        return base, alpha
    return im, None


def _to_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale -> mode L, scaled (65535 -> 255, 32768 -> 128), not clipped."""
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.int64)
        if im.mode == "I" and a.size and a.max() <= 255:
            scaled = a  # a 32-bit container holding 8-bit values
        else:
            scaled = (np.clip(a, 0, 65535) * 255 + 32767) // 65535
        return Image.fromarray(scaled.astype(np.uint8))
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    return im


def _to_srgb(im: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Any decoded mode -> (RGB in sRGB, alpha or None)."""
    icc = im.info.get("icc_profile")
    base, alpha = _split_alpha(im)
    base = _to_8bit(base)
    rgb = _apply_icc(base, icc) if icc else None
    if rgb is None:
        rgb = base if base.mode == "RGB" else base.convert("RGB")
    return rgb, alpha


# ICC colour space (header bytes 16-19) -> the Pillow mode the pixels must be in for the transform.
_ICC_SPACE_MODES = {"RGB": "RGB", "CMYK": "CMYK", "GRAY": "L"}


def _apply_icc(base: Image.Image, icc: bytes) -> Image.Image | None:
    """Convert with the embedded profile to sRGB; None (use a plain conversion) when the profile is unusable."""
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = src.profile.xcolor_space.strip().upper()
        mode = _ICC_SPACE_MODES.get(space)
        if mode is None:
            log.debug("ignoring ICC profile for colour space %r", space)
            return None
        if base.mode != mode:
            if mode == "CMYK":  # a CMYK profile on non-CMYK pixels is a broken file: ignore the profile
                return None
            base = base.convert(mode)
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        transform = ImageCms.buildTransform(src, srgb, mode, "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL)
        return ImageCms.applyTransform(base, transform)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.debug("ignoring unusable ICC profile: %r", exc)
        return None


# --- encoding -------------------------------------------------------------------------------------------


def shrink_to(image: Image.Image, max_side: int) -> Image.Image:
    """`image` with its long side at most `max_side` (Lanczos), or `image` itself when already small enough."""
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def normalize_format(fmt: str) -> OutputFormat:
    """'png' | 'jpeg' | 'jpg' | 'webp' (any case, optional dot) -> canonical name; ImageError otherwise."""
    key = fmt.strip().lower().lstrip(".")
    try:
        return _OUTPUT_ALIASES[key]
    except KeyError:
        raise ImageError(
            "unsupported_output_format", f"Output format must be png, jpeg or webp, not {fmt!r}.", 400
        ) from None


def encode_image(
    image: Image.Image,
    fmt: str = "png",
    *,
    byte_budget: int | None = None,
    alpha: Image.Image | None = None,
) -> EncodedImage:
    """Encode to `fmt`, fitting `byte_budget` bytes if given.

    PNG is kept when it fits; otherwise high-quality JPEG (WebP when there is alpha), lowering the quality
    to a floor of 80, then the size step by step, but never below half the linear size: ImageError
    'result_too_large' rather than a silently tiny picture. `alpha` (mode L, resized to the image) is put
    back; JPEG cannot hold it, so an explicit JPEG is flattened onto white.
    """
    wanted = normalize_format(fmt)
    if byte_budget is not None and byte_budget < _MIN_BYTE_BUDGET:
        raise ImageError(
            "invalid_byte_budget", f"The byte budget must be at least {_format_bytes(_MIN_BYTE_BUDGET)}.", 400
        )
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if alpha is not None:
        alpha = alpha.convert("L")
        if alpha.size != rgb.size:
            alpha = alpha.resize(rgb.size, Image.Resampling.LANCZOS)
        if alpha.getextrema() == (255, 255):
            alpha = None
    if wanted == "png":
        png = _encode_once(rgb, alpha, "png", None)
        if byte_budget is None or len(png.data) <= byte_budget:
            return png
        lossy: OutputFormat = "webp" if alpha is not None else "jpeg"
        log.debug("PNG is %d bytes > budget %d: falling back to %s", len(png.data), byte_budget, lossy)
    else:
        lossy = wanted
    if lossy == "jpeg" and alpha is not None:
        rgb = _flatten(rgb, alpha)
        alpha = None
    if byte_budget is None:
        return _encode_once(rgb, alpha, lossy, _QUALITY_LADDER[0])
    return _fit_lossy(rgb, alpha, lossy, byte_budget)


def _fit_lossy(rgb: Image.Image, alpha: Image.Image | None, fmt: OutputFormat, budget: int) -> EncodedImage:
    scale = 1.0
    while True:
        im, al = _scaled(rgb, alpha, scale)
        smallest: EncodedImage | None = None
        for quality in _QUALITY_LADDER:
            encoded = _encode_once(im, al, fmt, quality)
            if len(encoded.data) <= budget:
                if scale < 1.0:
                    log.info("output shrunk to %dx%d to fit %d bytes", *encoded.size, budget)
                return encoded
            smallest = encoded
        assert smallest is not None
        if scale <= _MIN_SCALE:
            raise ImageError(
                "result_too_large",
                f"The result does not fit in {_format_bytes(budget)} even at half size; "
                "try a smaller size or a larger upload limit.",
                413,
            )
        # Bytes grow roughly with the pixel count: aim just under the budget, at least one real step down.
        shrink = (budget / len(smallest.data)) ** 0.5 * 0.95
        scale = max(_MIN_SCALE, min(scale * shrink, scale * 0.9))


def _scaled(rgb: Image.Image, alpha: Image.Image | None, scale: float) -> tuple[Image.Image, Image.Image | None]:
    if scale >= 1.0:
        return rgb, alpha
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    im = rgb.resize(size, Image.Resampling.LANCZOS)
    al = alpha.resize(size, Image.Resampling.LANCZOS) if alpha is not None else None
    return im, al


def _flatten(rgb: Image.Image, alpha: Image.Image) -> Image.Image:
    white = Image.new("RGB", rgb.size, (255, 255, 255))
    return Image.composite(rgb, white, alpha)


def _encode_once(rgb: Image.Image, alpha: Image.Image | None, fmt: OutputFormat, quality: int | None) -> EncodedImage:
    im = rgb
    if alpha is not None:
        im = rgb.copy()
        im.putalpha(alpha)
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, "PNG", compress_level=6)
        quality = None
    elif fmt == "jpeg":
        q = quality or _QUALITY_LADDER[0]
        # 4:4:4 chroma at high quality: 4:2:0 smears the fine coloured brush strokes.
        # No optimize=True: libjpeg then needs the whole output in one buffer that Pillow sizes by guess,
        # and noisy high-quality images overflow it ("Suspension not allowed here").
        im.save(buf, "JPEG", quality=q, subsampling=0 if q >= 90 else 2)
    else:
        im.save(buf, "WEBP", quality=quality or _QUALITY_LADDER[0], method=4)
    return EncodedImage(
        data=buf.getvalue(),
        format=fmt,
        content_type=_CONTENT_TYPES[fmt],
        extension=_EXTENSIONS[fmt],
        size=rgb.size,
        quality=quality,
    )


def reencode(encoded: EncodedImage, byte_budget: int) -> EncodedImage:
    """Our own output again, fitted to a smaller budget (same rules as `encode_image`)."""
    with Image.open(io.BytesIO(encoded.data)) as im:
        im.load()
        alpha = im.getchannel("A") if "A" in im.getbands() else None
        return encode_image(im.convert("RGB"), encoded.format, byte_budget=byte_budget, alpha=alpha)
