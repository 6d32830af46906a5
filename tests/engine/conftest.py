"""Fixtures for the engine tests: tiny images (good and deliberately bad) made in code, never read from disk."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image, ImageCms


def _gradient(width: int, height: int) -> np.ndarray:
    """An RGB gradient with some structure, so encoders and the optimiser have something to chew on."""
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255 // max(1, width - 1)).astype(np.uint8)
    g = (y * 255 // max(1, height - 1)).astype(np.uint8)
    b = (((x // 4 + y // 4) % 2) * 200 + 20).astype(np.uint8)
    return np.stack([r, g, b], axis=-1)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


class Samples:
    """Byte strings of small image files, good and bad; each method builds a fresh one."""

    @staticmethod
    def rgb(width: int = 48, height: int = 32) -> Image.Image:
        return Image.fromarray(_gradient(width, height))

    @staticmethod
    def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt, **kwargs)
        return buf.getvalue()

    def jpeg(self, width: int = 48, height: int = 32, **kwargs: object) -> bytes:
        return self.encode(self.rgb(width, height), "JPEG", quality=95, **kwargs)

    def png(self, width: int = 48, height: int = 32) -> bytes:
        return self.encode(self.rgb(width, height), "PNG")

    def webp(self, width: int = 48, height: int = 32) -> bytes:
        return self.encode(self.rgb(width, height), "WEBP", quality=90)

    def bmp(self, width: int = 48, height: int = 32) -> bytes:
        return self.encode(self.rgb(width, height), "BMP")

    def tiff(self, width: int = 48, height: int = 32) -> bytes:
        return self.encode(self.rgb(width, height), "TIFF")

    def truncated_jpeg(self) -> bytes:
        data = self.jpeg(64, 64)
        return data[: len(data) // 2]

    @staticmethod
    def png_header_only(width: int, height: int) -> bytes:
        """A PNG whose IHDR claims width x height (valid CRC) followed by a tiny IDAT: no big allocation."""
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        idat = zlib.compress(b"\x00" * 16)
        return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")

    def huge_png(self) -> bytes:
        return self.png_header_only(30000, 30000)

    @staticmethod
    def text_as_png() -> bytes:
        return b"This is a plain text file that someone renamed to picture.png\n" * 4

    @staticmethod
    def gif_3_frames(width: int = 40, height: int = 30) -> bytes:
        colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
        frames = [Image.new("RGB", (width, height), c) for c in colours]
        buf = io.BytesIO()
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
        return buf.getvalue()

    def cmyk_jpeg(self, width: int = 40, height: int = 30) -> bytes:
        # Full magenta + yellow = red.
        return self.encode(Image.new("CMYK", (width, height), (0, 255, 255, 0)), "JPEG", quality=95)

    def png16(self) -> bytes:
        """16-bit greyscale PNG: columns of 0, 32768 and 65535 (8 rows)."""
        row = np.array([0, 32768, 65535] * 4, dtype=np.uint16)
        a = np.tile(row, (8, 1))
        return self.encode(Image.fromarray(a), "PNG")

    def rgba_png(self, width: int = 48, height: int = 32) -> bytes:
        im = self.rgb(width, height).convert("RGBA")
        alpha = np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
        im.putalpha(Image.fromarray(alpha))
        return self.encode(im, "PNG")

    def palette_transparent_png(self, width: int = 32, height: int = 32) -> bytes:
        im = Image.new("P", (width, height), 0)
        im.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 - 2) * 3)
        im.paste(1, (0, 0, width // 2, height))  # left half index 1 (blue), right half index 0 (red)
        return self.encode(im, "PNG", transparency=0)

    def exif_rotated_jpeg(self, width: int = 48, height: int = 32, orientation: int = 6) -> bytes:
        exif = Image.Exif()
        exif[0x0112] = orientation
        return self.jpeg(width, height, exif=exif.tobytes())

    def greyscale_png(self) -> bytes:
        return self.encode(self.rgb().convert("L"), "PNG")

    def la_png(self) -> bytes:
        return self.encode(self.rgb().convert("LA"), "PNG")

    @staticmethod
    def swapped_primaries_profile() -> bytes:
        """sRGB with its red and green colorants swapped: pure red pixels tagged with it are pure green in sRGB."""
        icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
        count = struct.unpack(">I", icc[128:132])[0]
        entries = {}
        for i in range(count):
            at = 132 + 12 * i
            entries[bytes(icc[at:at + 4])] = at
        r, g = entries[b"rXYZ"], entries[b"gXYZ"]
        icc[r + 4:r + 12], icc[g + 4:g + 12] = icc[g + 4:g + 12], icc[r + 4:r + 12]
        return bytes(icc)

    def icc_tagged_png(self, colour: tuple[int, int, int] = (255, 0, 0)) -> bytes:
        im = Image.new("RGB", (16, 16), colour)
        return self.encode(im, "PNG", icc_profile=self.swapped_primaries_profile())

    def lab_profile_jpeg(self) -> bytes:
        lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
        return self.jpeg(32, 32, icc_profile=lab)

    @staticmethod
    def corrupt_png() -> bytes:
        ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
        garbage = b"\x78\x9c" + bytes(range(200))  # zlib header, then junk
        chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", garbage) + _png_chunk(b"IEND", b"")
        return b"\x89PNG\r\n\x1a\n" + chunks

    @staticmethod
    def svg() -> bytes:
        return b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>\n'

    @staticmethod
    def pdf() -> bytes:
        return b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


@pytest.fixture
def samples() -> Samples:
    return Samples()


# --- builtin presets ---------------------------------------------------------------------------------------


@pytest.fixture
def procedural():
    """The generators behind the builtin presets (nst_engine.images.procedural: NAMES, generate)."""
    from nst_engine.images import procedural

    return procedural


# --- the engine service ----------------------------------------------------------------------------------------

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FINAL_EVENTS = {"done", "failed", "cancelled", "timed_out", "expired", "shutdown"}


class FakeControls:
    """Knobs and records shared by every FakeStylizer of one app (tests of the service, not of the model)."""

    def __init__(self) -> None:
        import threading

        self.delay = 0.0
        """Seconds per iteration."""
        self.hold = False
        """Wait at the first iteration until `release` is set (or the job is cancelled)."""
        self.release = threading.Event()
        self.oom_above: int | None = None
        """Raise torch.OutOfMemoryError for sizes above this."""
        self.fail_with: BaseException | None = None
        self.fail_once = False
        self.warm_up_error: BaseException | None = None
        self.started: list[tuple[str, dict]] = []
        """(requester-free record) one entry per stylize call: (content colour key, params dict)."""
        self.calls: list[dict] = []
        self.entered = threading.Event()


class FakeStylizer:
    """Same calling contract as optimize.Stylizer, without a model: fast and controllable."""

    def __init__(self, options, controls: FakeControls) -> None:
        self.options = options
        self.controls = controls

    @property
    def device(self) -> str:
        return self.options.device

    def warm_up(self, params=None) -> None:
        if self.controls.warm_up_error is not None:
            raise self.controls.warm_up_error

    def stylize(self, content, styles, params=None, *, style_keys=None, init_image=None, callback=None,
                cancel=None):
        import time as _time

        import torch

        from nst_engine.core.optimize import Cancelled, Progress, StyleResult
        from nst_engine.core.pixels import fit_long_side

        c = self.controls
        c.calls.append({"size": params.size, "steps": params.steps, "style_keys": list(style_keys or []),
                        "n_styles": len(styles), "content_size": content.size,
                        "marker": content.getpixel((0, 0))})
        c.entered.set()
        if c.fail_with is not None:
            exc = c.fail_with
            if c.fail_once:
                c.fail_with = None
            raise exc
        if c.oom_above is not None and params.size > c.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        size = fit_long_side(*content.size, params.size)
        t0 = _time.monotonic()
        for i in range(1, params.steps + 1):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if c.hold and i == 1:
                while not c.release.is_set():
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    _time.sleep(0.005)
            if c.delay:
                _time.sleep(c.delay)
            if callback is not None:
                def render(side: int, _content=content) -> Image.Image:
                    im = _content.copy()
                    im.thumbnail((side, side))
                    return im
                elapsed = _time.monotonic() - t0
                callback(Progress(scale=0, num_scales=1, iteration=i, total=params.steps,
                                  losses={"total": 100.0 / i}, elapsed=elapsed,
                                  eta=elapsed / i * (params.steps - i), size=size, _render=render))
        out = content.resize(size)
        t = _time.monotonic() - t0
        return StyleResult(image=out, losses={"total": 1.0}, timings={"setup": 0.0, "optimize": t, "total": t},
                           iterations=params.steps, evaluations=params.steps, scales=[size],
                           device=self.options.device)


class Engine:
    """A running engine app behind aiohttp's test server, with helpers for the job API."""

    def __init__(self, client, app, settings, controls: FakeControls | None) -> None:
        self.client = client
        self.app = app
        self.settings = settings
        self.fake = controls
        self.token = TOKEN
        self.auth = dict(AUTH)

    async def submit(self, content: bytes | None = None, styles: list[bytes] | tuple = (), presets=(),
                     headers=None, content_name: str = "content.png", **fields):
        import aiohttp

        form = aiohttp.FormData()
        if content is not None:
            form.add_field("content", content, filename=content_name, content_type="application/octet-stream")
        for i, style in enumerate(styles):
            form.add_field("style", style, filename=f"style{i}.png", content_type="application/octet-stream")
        for name in presets:
            form.add_field("preset", name)
        for key, value in fields.items():
            form.add_field(key, str(value))
        return await self.client.post("/v1/jobs", data=form, headers=AUTH if headers is None else headers)

    async def submit_ok(self, content: bytes, styles=(), presets=(), **fields) -> dict:
        async with await self.submit(content, styles, presets, **fields) as resp:
            body = await resp.json()
            assert resp.status == 202, body
            return body

    async def events(self, job_id: str, preview: int | None = None) -> list[dict]:
        """Every event of the job's stream, until the stream ends."""
        import json as _json

        params = {"preview": str(preview)} if preview else {}
        out = []
        async with self.client.get(f"/v1/jobs/{job_id}/events", headers=AUTH, params=params) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.content_type == "application/x-ndjson"
            async for line in resp.content:
                if line.strip():
                    out.append(_json.loads(line))
        return out

    async def watched(self, job_id: str, preview: int | None = None) -> list[dict]:
        """Events of a job held by the fake (`controls.hold`): released once the watcher is attached."""
        import asyncio

        from nst_engine.service.keys import JOBS_KEY

        task = asyncio.create_task(self.events(job_id, preview))
        job = self.app[JOBS_KEY].get(job_id)
        for _ in range(1000):
            if job._watchers or task.done():
                break
            await asyncio.sleep(0.005)
        self.fake.release.set()
        return await task

    async def wait_for(self, predicate, timeout: float = 10.0) -> None:
        import asyncio

        for _ in range(int(timeout / 0.01)):
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not reached in time")

    def job(self, job_id: str):
        from nst_engine.service.keys import JOBS_KEY

        return self.app[JOBS_KEY].get(job_id)

    async def wait(self, job_id: str) -> dict:
        events = await self.events(job_id)
        assert events[-1]["type"] in FINAL_EVENTS, events[-1]
        return events[-1]

    async def get_json(self, path: str, status: int = 200, headers=None) -> dict:
        async with self.client.get(path, headers=AUTH if headers is None else headers) as resp:
            body = await resp.json()
            assert resp.status == status, body
            return body


@pytest.fixture
def engine_token() -> str:
    return TOKEN


@pytest.fixture
def auth_headers() -> dict[str, str]:
    return dict(AUTH)


@pytest.fixture
def fake_controls() -> FakeControls:
    """Controls to pass as `start_engine(controls=...)` when a test must set them before startup."""
    return FakeControls()


@pytest.fixture
def engine_settings(tmp_path):
    """Keyword arguments for EngineSettings suitable for tests (override per test)."""
    return dict(
        token=TOKEN, device="cpu", presets_dir=tmp_path / "presets", max_size=64, default_size=32,
        max_steps=5, default_steps=3, queue_size=20, max_queued_per_requester=5, job_timeout=30.0,
        result_ttl=60.0, shutdown_grace=1.0, progress_interval=0.0, preview_interval=0.0,
    )


@pytest_asyncio.fixture
async def start_engine(engine_settings):
    """`await start_engine(fake=True, **settings)` -> Engine; everything started is closed afterwards."""
    from aiohttp.test_utils import TestClient, TestServer

    from nst_engine.service.app import create_app
    from nst_engine.service.settings import EngineSettings

    started: list[TestClient] = []

    async def start(*, fake: bool = True, controls: FakeControls | None = None, **overrides) -> Engine:
        settings = EngineSettings(**{**engine_settings, **overrides})
        factory = None
        if fake:
            controls = controls or FakeControls()
            factory = lambda options: FakeStylizer(options, controls)  # noqa: E731
        app = create_app(settings, stylizer_factory=factory)
        client = TestClient(TestServer(app))
        await client.start_server()
        started.append(client)
        return Engine(client, app, settings, controls if fake else None)

    yield start
    for client in reversed(started):
        await client.close()
