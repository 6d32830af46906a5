"""Helpers for the bot's end-to-end tests: the engine service in-process (real aiohttp app, with a fake or the
real stylizer), the real StyleBot talking to the Discord double and to that engine over sockets, and readers
of what the channel shows. The fixtures are in conftest.py."""
from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Import the double before discord (it silences discord.py's audioop warning).
from devtools.discord_double import DiscordDouble, running  # isort: skip

import aiohttp  # isort: skip
from aiohttp.test_utils import TestServer  # isort: skip

from bot.client import StyleBot  # isort: skip
from bot.engine.http import EngineClient  # isort: skip
from bot.journal import Journal  # isort: skip
from bot.settings import BotSettings  # isort: skip

ENGINE_TOKEN = "bot-tests-token-0123456789"


# --- images ------------------------------------------------------------------------------------------------


def png(width: int = 48, height: int = 32, kind: str = "photo") -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    if kind == "photo":
        rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1),
                        np.full_like(x, 90)], axis=-1)
    else:
        stripes = ((x + y) // 4) % 2 == 0
        rgb = np.where(stripes[..., None], np.array([220, 30, 40]), np.array([30, 50, 210]))
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


PHOTO = png()
PAINTING = png(32, 32, "painting")


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


# --- the engine ------------------------------------------------------------------------------------------------


class FakeControls:
    def __init__(self) -> None:
        self.delay = 0.0
        self.hold = False
        self.release = threading.Event()
        self.calls: list[dict[str, Any]] = []
        self.entered = threading.Event()


class FakeStylizer:
    """The engine's Stylizer contract without the model: fast, and holdable at its first iteration."""

    def __init__(self, options: Any, controls: FakeControls) -> None:
        self.options = options
        self.controls = controls

    @property
    def device(self) -> str:
        return self.options.device

    def warm_up(self, params: Any = None) -> None:
        pass

    def stylize(self, content, styles, params=None, *, style_keys=None, init_image=None, callback=None, cancel=None):
        from nst_engine.core.optimize import Cancelled, Progress, StyleResult
        from nst_engine.core.pixels import fit_long_side

        c = self.controls
        c.calls.append({"size": params.size, "steps": params.steps, "strength": params.strength,
                        "preserve_colors": params.preserve_colors, "seed": params.seed, "n_styles": len(styles),
                        "style_keys": list(style_keys or [])})
        c.entered.set()
        size = fit_long_side(*content.size, params.size)
        t0 = time.monotonic()
        for i in range(1, params.steps + 1):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            while c.hold and not c.release.is_set():
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                time.sleep(0.01)
            if c.delay:
                time.sleep(c.delay)
            if callback is not None:
                def render(side: int, _content=content) -> Image.Image:
                    im = _content.copy()
                    im.thumbnail((side, side))
                    return im
                elapsed = time.monotonic() - t0
                callback(Progress(scale=0, num_scales=1, iteration=i, total=params.steps, losses={"total": 1.0 / i},
                                  elapsed=elapsed, eta=elapsed / i * (params.steps - i), size=size, _render=render))
        out = Image.blend(content.resize(size), styles[0].resize(size).convert("RGB"), 0.5)
        t = time.monotonic() - t0
        return StyleResult(image=out, losses={"total": 1.0}, timings={"setup": 0.0, "optimize": t, "total": t},
                           iterations=params.steps, evaluations=params.steps, scales=[size], device=self.options.device)


class Engine:
    """The engine's aiohttp app on 127.0.0.1 (a real HTTP server); stop() and start() again on the same port."""

    def __init__(self, tmp_path: Path, *, fake: bool = True, port: int | None = None, **overrides: Any) -> None:
        self.tmp_path = tmp_path
        self.fake = FakeControls() if fake else None
        self.port = port
        self.overrides = overrides
        self.server: TestServer | None = None
        self.app: Any = None

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Engine:
        from nst_engine.service.app import create_app
        from nst_engine.service.settings import EngineSettings

        settings = EngineSettings(**{
            "token": ENGINE_TOKEN, "device": "cpu", "presets_dir": self.tmp_path / "engine-presets",
            "max_size": 64, "default_size": 32, "max_steps": 5, "default_steps": 2, "queue_size": 20,
            "max_queued_per_requester": 5, "job_timeout": 60.0, "result_ttl": 120.0, "shutdown_grace": 0.5,
            "progress_interval": 0.0, "preview_interval": 0.0, **self.overrides})
        controls = self.fake
        factory = (lambda options: FakeStylizer(options, controls)) if controls is not None else None  # noqa: E731
        self.app = create_app(settings, stylizer_factory=factory)
        self.server = TestServer(self.app, host="127.0.0.1", port=self.port or 0)
        await self.server.start_server()
        self.port = self.server.port
        async with aiohttp.ClientSession() as http:  # until the workers are ready
            for _ in range(600):
                async with http.get(f"{self.url}/readyz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.05)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.close()

    def job(self, job_id: str) -> Any:
        from nst_engine.service.keys import JOBS_KEY

        return self.app[JOBS_KEY].get(job_id)


# --- the bot ---------------------------------------------------------------------------------------------------


class BotRunner:
    """Builds StyleBots pointed at the double and an engine; `async with harness.run(**overrides) as bot:`."""

    def __init__(self, double: DiscordDouble, tmp_path: Path) -> None:
        self.double = double
        self.tmp_path = tmp_path
        self.db_path = tmp_path / "bot.sqlite3"

    def settings(self, engine_url: str | None, **overrides: Any) -> BotSettings:
        values: dict[str, Any] = dict(
            discord_token=self.double.token, dev_guild_id=self.double.guild.id, engine_url=engine_url,
            engine_token=ENGINE_TOKEN, db_path=self.db_path, allowed_cdn_hosts=("127.0.0.1",),
            progress_edit_interval=0.0, preview_interval=0.0, user_cooldown_seconds=0.0, default_size=32,
            max_size=64, job_steps=2, engine_retry_max_seconds=0.3,
        )
        values.update(overrides)
        return BotSettings(**values)

    @contextlib.asynccontextmanager
    async def run(self, engine: Engine | str, **overrides: Any) -> AsyncIterator[StyleBot]:
        url = engine if isinstance(engine, str) else engine.url
        settings = self.settings(url, **overrides)
        async with aiohttp.ClientSession() as session:
            journal = await Journal.open(settings.db_path)
            try:
                client = EngineClient(session, url, settings.engine_token, backoff=0.05, max_backoff=0.3)
                bot = StyleBot(settings, session=session, journal=journal, engine=client, guild_ready_timeout=0.1)
                async with running(bot, self.double, wait_ready=True):
                    await self.double.wait_for("commands_sync")
                    yield bot
            finally:
                await journal.close()


# --- reading the channel ---------------------------------------------------------------------------------------


def buttons(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message.get("components", []) for c in row.get("components", [])
            if c.get("custom_id")]


async def final_of(double: DiscordDouble, message_id: int | str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the status message `message_id` shows a final state (done/failed/cancelled); returns it."""
    action = await double.wait_for(
        "message_edit", lambda a: a.message_id == int(message_id) and _is_final(a.content or ""), timeout=timeout)
    assert action.message is not None
    return action.message


def _is_final(content: str) -> bool:
    return any(mark in content for mark in ("✅", "❌", "🚫"))


async def until(condition: Callable[[], Any], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def settled(bot: StyleBot, job_id: str, timeout: float = 10.0) -> Any:
    """The journal record of a job once it is final (the status edit comes just before the journal write)."""
    async def poll() -> Any:
        while True:
            record = await bot.journal.get_job(job_id)
            if record is not None and record.finished:
                return record
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout)


def job_id_of(content: str | None) -> str:
    import re

    match = re.search(r"Job `([0-9a-f]{12})`", content or "")
    assert match, content
    return match.group(1)
