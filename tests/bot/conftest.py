"""Fixtures for the bot's end-to-end tests (helpers in support.py)."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from devtools.discord_double import DiscordDouble  # isort: skip  (before discord)

from tests.bot.support import BotRunner, Engine  # isort: skip


@pytest_asyncio.fixture
async def engine_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await engine_factory(fake=True, start=True, port=None, **EngineSettings overrides)`; all stopped after."""
    engines: list[Engine] = []

    async def make(*, start: bool = True, **kwargs: Any) -> Engine:
        engine = Engine(tmp_path, **kwargs)
        engines.append(engine)
        return await engine.start() if start else engine

    yield make
    for engine in engines:
        if engine.fake is not None:
            engine.fake.release.set()
        await engine.stop()


@pytest_asyncio.fixture
async def engine(engine_factory) -> Engine:
    return await engine_factory()


@pytest.fixture
def harness(discord_double: DiscordDouble, tmp_path: Path) -> BotRunner:
    return BotRunner(discord_double, tmp_path)
