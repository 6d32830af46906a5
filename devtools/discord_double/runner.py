"""Run a discord.py client against a started double for the length of an ``async with``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

import discord

from .server import DiscordDouble

ClientT = TypeVar("ClientT", bound=discord.Client)


@contextlib.asynccontextmanager
async def running(
    bot: ClientT, double: DiscordDouble, *, wait_ready: bool = False, timeout: float = 10.0
) -> AsyncIterator[ClientT]:
    """Start ``bot`` with the double's token; yield once it is connected (READY and GUILD_CREATE
    received), or once ``on_ready`` fired with ``wait_ready=True``. Closes the bot afterwards.

    Requires the discord.py hooks to be in place (the ``discord_double`` fixture does that).
    """
    sessions_before = double.gateway.identified
    task = asyncio.create_task(bot.start(double.token), name="discord-double-bot")
    try:
        waiter = asyncio.ensure_future(
            bot.wait_until_ready() if wait_ready else double.wait_until_connected(timeout, count=sessions_before + 1)
        )
        done, _ = await asyncio.wait({task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            task.result()  # re-raise why the bot stopped (e.g. LoginFailure)
            raise RuntimeError("the bot stopped before it connected")
        if waiter not in done:
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            raise TimeoutError(f"the bot did not connect within {timeout}s")
        waiter.result()
        yield bot
    finally:
        await bot.close()
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        crash = None if task.cancelled() else task.exception()  # (also marks it retrieved)
    if crash is not None:  # the body succeeded, but the bot died on the way
        raise crash
