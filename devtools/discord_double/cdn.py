"""The CDN: serves attachments that users post (so ``Attachment.read()`` downloads real bytes
over a socket) and files the bot uploads (so tests can download them back).

URLs have Discord's shape, signed like Discord's attachment URLs (``ex``/``is``/``hm``):
``/attachments/{channel_id}/{attachment_id}/{filename}?ex=..&is=..&hm=..``; interaction
(slash command) uploads live under ``/ephemeral-attachments/...``.

Docs: https://discord.com/developers/docs/reference#image-formatting
      https://discord.com/developers/docs/reference#signed-attachment-cdn-urls
      https://discord.com/developers/docs/resources/message#attachment-object
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import secrets
import struct
import zlib
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

from .state import StoredFile

if TYPE_CHECKING:
    from .server import DiscordDouble

ATTACHMENT_LIFETIME_S = 24 * 3600


def sanitize_filename(filename: str) -> str:
    """Discord stores uploaded names with spaces replaced by underscores."""
    return filename.replace(" ", "_") or "unknown"


def guess_content_type(filename: str, declared: str | None = None) -> str | None:
    """Discord sniffs the type from the name; discord.py always declares application/octet-stream."""
    if declared and declared != "application/octet-stream":
        return declared
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or declared


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width/height for PNG, GIF and JPEG (Discord sets them on image attachments)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return w, h
            i += 2 + length
    return None


def _tiny_png() -> bytes:
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\x58\x65\xf2"))
        + chunk(b"IEND", b"")
    )


TINY_PNG = _tiny_png()


class CDN:
    def __init__(self, double: DiscordDouble) -> None:
        self.double = double
        self._secret = secrets.token_bytes(16)
        self.requests: list[tuple[str, int]] = []  # (path, status) of every CDN GET, in order

    # -- storing ------------------------------------------------------------------------------
    def put(
        self,
        *,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> StoredFile:
        store = self.double.store
        file_id = store.snowflakes.make()
        filename = sanitize_filename(filename)
        size = image_size(data)
        stored = StoredFile(
            id=file_id,
            filename=filename,
            content_type=guess_content_type(filename, content_type),
            data=bytes(data),
            url=self._signed_url(channel_id, file_id, filename, ephemeral),
            description=description,
            ephemeral=ephemeral,
            width=size[0] if size else None,
            height=size[1] if size else None,
        )
        store.files[file_id] = stored
        return stored

    def _signature(self, path: str, ex: str, is_: str) -> str:
        return hmac.new(self._secret, f"{path}|{ex}|{is_}".encode(), hashlib.sha256).hexdigest()

    def _signed_url(self, channel_id: int, file_id: int, filename: str, ephemeral: bool) -> str:
        prefix = "ephemeral-attachments" if ephemeral else "attachments"
        path = f"/{prefix}/{channel_id}/{file_id}/{filename}"
        now = int(self.double.clock.now())
        ex, is_ = format(now + ATTACHMENT_LIFETIME_S, "x"), format(now, "x")
        return f"{self.double.url}{quote(path)}?ex={ex}&is={is_}&hm={self._signature(path, ex, is_)}&"

    # -- serving ------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/attachments/{channel_id}/{file_id}/{filename}", self.get_attachment)
        app.router.add_get("/ephemeral-attachments/{channel_id}/{file_id}/{filename}", self.get_attachment)
        app.router.add_get("/embed/avatars/{index}.png", self.get_default_avatar)

    def _gone(self, request: web.Request, status: int = 404) -> web.Response:
        self.requests.append((request.path, status))
        return web.Response(status=status, text="This content is no longer available.", content_type="text/plain")

    async def get_attachment(self, request: web.Request) -> web.Response:
        """Signed attachment URL: https://discord.com/developers/docs/reference#signed-attachment-cdn-urls"""
        try:
            stored = self.double.store.files[int(request.match_info["file_id"])]
        except (KeyError, ValueError):
            return self._gone(request)
        ex, is_, hm = (request.query.get(k, "") for k in ("ex", "is", "hm"))
        if not hmac.compare_digest(hm, self._signature(request.path, ex, is_)):  # path is decoded
            return self._gone(request)
        if int(ex or "0", 16) < self.double.clock.now():
            return self._gone(request)  # signed URL expired
        if stored.cdn_status != 200:
            return self._gone(request, stored.cdn_status)
        self.requests.append((request.path, 200))
        return web.Response(body=stored.data, content_type=stored.content_type or "application/octet-stream")

    async def get_default_avatar(self, request: web.Request) -> web.Response:
        """https://discord.com/developers/docs/reference#image-formatting-cdn-endpoints (Default User Avatar)"""
        self.requests.append((request.path, 200))
        return web.Response(body=TINY_PNG, content_type="image/png")
