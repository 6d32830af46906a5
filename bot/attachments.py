"""Images users send: find them in messages, check their metadata before downloading, fetch them capped.

Only URLs on the allowed CDN hosts (Discord's, by default) are ever fetched: no arbitrary URLs, so no SSRF.
The declared size is checked before the download, and the download itself stops one byte past the cap.
"""
from __future__ import annotations

import asyncio
import io
import logging
import os
from dataclasses import dataclass

import aiohttp
import discord
import yarl
from PIL import Image, UnidentifiedImageError

from .errors import BadAttachment

log = logging.getLogger(__name__)

# What Discord users send and the engine accepts (docs/engine-api.md, "Accepted input formats").
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo"})
ENGINE_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF"})
FORMATS_TEXT = "PNG, JPEG, WebP, GIF, BMP or TIFF"
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
_CHUNK = 64 * 1024
TOO_MANY_PIXELS = "too many pixels"


@dataclass(frozen=True)
class ImageRef:
    """An image in a message, not downloaded yet."""

    url: str
    filename: str
    size: int | None = None
    """Bytes, as Discord declares them (None for embed images)."""
    content_type: str | None = None


@dataclass(frozen=True)
class FetchedImage:
    filename: str
    data: bytes
    format: str


def ref_of(attachment: discord.Attachment) -> ImageRef:
    return ImageRef(attachment.url, attachment.filename, attachment.size, attachment.content_type)


def image_refs(message: discord.Message) -> list[ImageRef]:
    """Attachments first, then embed images (through Discord's media proxy)."""
    refs = [ref_of(a) for a in message.attachments]
    for embed in message.embeds:
        for media in (embed.image, embed.thumbnail):
            url = media.proxy_url or media.url
            if url:
                refs.append(ImageRef(url, os.path.basename(yarl.URL(url).path) or "image.png"))
                break
    return refs


def looks_like_image(ref: ImageRef) -> bool:
    if ref.content_type:
        return ref.content_type.split(";")[0].strip().lower().startswith("image/")
    return os.path.splitext(ref.filename)[1].lower() in IMAGE_EXTENSIONS


def check(ref: ImageRef, *, max_bytes: int, allowed_hosts: tuple[str, ...]) -> None:
    """BadAttachment unless the image is on an allowed host, declares an image type and is small enough."""
    name = _short(ref.filename)
    url = yarl.URL(ref.url)
    host = (url.host or "").lower()
    if url.scheme not in ("https", "http") or host not in allowed_hosts or (
            url.scheme == "http" and host not in ("127.0.0.1", "localhost", "::1")):
        raise BadAttachment(f"I can only use images uploaded to Discord; `{name}` is somewhere else.")
    if not looks_like_image(ref):
        raise BadAttachment(f"`{name}` is not an image. Please send a {FORMATS_TEXT} file.")
    if ref.size is not None and ref.size > max_bytes:
        raise BadAttachment(f"`{name}` is {_mib(ref.size)}; the limit is {_mib(max_bytes)}. "
                            "Please send a smaller image.")


async def fetch(session: aiohttp.ClientSession, ref: ImageRef, *, max_bytes: int,
                allowed_hosts: tuple[str, ...]) -> FetchedImage:
    """Download (capped, no redirects off the CDN) and sniff the bytes; BadAttachment on any problem."""
    check(ref, max_bytes=max_bytes, allowed_hosts=allowed_hosts)
    name = _short(ref.filename)
    try:
        async with session.get(ref.url, allow_redirects=False, timeout=DOWNLOAD_TIMEOUT) as resp:
            if resp.status != 200:
                log.info("CDN answered %d for %s", resp.status, name)
                raise BadAttachment(f"I could not download `{name}` (it may have been deleted). Please send it again.")
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise BadAttachment(f"`{name}` is larger than {_mib(max_bytes)}. Please send a smaller image.")
            chunks, total = [], 0
            async for chunk in resp.content.iter_chunked(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise BadAttachment(f"`{name}` is larger than {_mib(max_bytes)}. Please send a smaller image.")
                chunks.append(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("download of %s failed: %r", name, exc)
        raise BadAttachment(f"I could not download `{name}`; please try again.") from None
    data = b"".join(chunks)
    fmt = await asyncio.to_thread(sniff, data)
    if fmt is None:
        raise BadAttachment(f"`{name}` is not an image I can read. Please send a {FORMATS_TEXT} file.")
    if fmt == TOO_MANY_PIXELS:
        raise BadAttachment(f"`{name}` has too many pixels for me. Please send a smaller image.")
    if fmt not in ENGINE_FORMATS:
        raise BadAttachment(f"`{name}` is a {fmt} image; please send a {FORMATS_TEXT} file.")
    return FetchedImage(ref.filename, data, fmt)


def sniff(data: bytes) -> str | None:
    """The image format from the header (Pillow reads the header only, never the pixels), or None."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format
    except Image.DecompressionBombError:
        return TOO_MANY_PIXELS
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _short(name: str) -> str:
    name = name.replace("`", "'")
    return name if len(name) <= 40 else name[:37] + "..."


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"
