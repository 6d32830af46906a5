"""pytest fixtures for end-to-end bot tests against the Discord double.

Use them with ``pytest_plugins = ["devtools.discord_double.pytest_plugin"]`` in the root
conftest, or import the fixtures into a test module.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from .hooks import pointed_at
from .server import DiscordDouble


@pytest_asyncio.fixture
async def discord_double_factory() -> AsyncIterator[Callable[..., Awaitable[DiscordDouble]]]:
    """``await discord_double_factory(heartbeat_interval_ms=100, ...)``: a started double with
    custom settings (``DiscordDouble.__init__`` arguments), discord.py pointed at it. One per
    test: the hooks are process-wide. Closed and un-hooked afterwards; the test fails if the
    bot called a REST route the double lacks or hit a bug in the double."""
    doubles: list[DiscordDouble] = []
    with contextlib.ExitStack() as hooks:

        async def make(**kwargs: Any) -> DiscordDouble:
            if doubles:
                raise RuntimeError("one DiscordDouble per test: discord.py's hooks are process-wide")
            double = DiscordDouble(**kwargs)
            await double.start()
            doubles.append(double)
            hooks.enter_context(pointed_at(double.url))
            return double

        try:
            yield make
        finally:
            for double in doubles:
                await double.close()
    problems = [p for d in doubles for p in d.problems()]
    if problems:
        pytest.fail("discord double problems:\n" + "\n".join(problems), pytrace=False)


@pytest_asyncio.fixture
async def discord_double(discord_double_factory) -> DiscordDouble:
    """A started double with default settings and discord.py pointed at it."""
    return await discord_double_factory()
