"""The real bot in broker mode: the Discord double, the bot's JobRunner over BrokerEngine, a real nats-server and
real worker processes. The runner renders the broker's events exactly as the HTTP stream's."""
from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator

import pytest

from devtools.discord_double import DiscordDouble, running  # isort: skip
import aiohttp  # isort: skip

from bot.client import StyleBot  # isort: skip
from bot.engine.broker import BrokerAddress, BrokerEngine  # isort: skip
from bot.journal import Journal  # isort: skip
from tests.bot.support import PAINTING, PHOTO, BotRunner, decode, final_of, job_id_of, settled  # isort: skip
from tests.broker.support import TOKEN, pid_running, wait_until  # isort: skip

pytestmark = pytest.mark.asyncio


@contextlib.asynccontextmanager
async def broker_bot(double: DiscordDouble, tmp_path, url: str, **overrides) -> AsyncIterator[StyleBot]:
    harness = BotRunner(double, tmp_path)
    settings = harness.settings(None, engine_token=None, engine_broker_url=url, engine_broker_token=TOKEN, **overrides)
    engine = BrokerEngine(BrokerAddress(url, token=TOKEN))
    await engine.start()
    async with aiohttp.ClientSession() as session:
        journal = await Journal.open(settings.db_path)
        try:
            bot = StyleBot(settings, session=session, journal=journal, engine=engine, guild_ready_timeout=0.1)
            async with running(bot, double, wait_ready=True):
                await double.wait_for("commands_sync")
                yield bot
        finally:
            await journal.close()
            await engine.close()


async def test_stylize_through_the_broker(discord_double: DiscordDouble, nats_server, workers, tmp_path) -> None:
    double = discord_double
    workers.start()
    async with broker_bot(double, tmp_path, nats_server.url) as bot:
        await double.post_message("!stylize", attachments=[("photo.png", PHOTO, "image/png"),
                                                          ("painting.png", PAINTING, "image/png")])
        status = await double.wait_for("message_create")
        final = await final_of(double, status.message_id, timeout=60)
        record = await settled(bot, job_id_of(status.content))
    assert "done" in final["content"]
    assert decode(await double.download(final["attachments"][0])).size == (32, 21)
    assert record.state == "done" and record.engine_url == "nats"


async def test_the_user_is_told_when_the_gpu_worker_is_lost(discord_double: DiscordDouble, nats_server, workers,
                                                           tmp_path) -> None:
    double = discord_double
    workers.start(FAKE_STEP_S="0.1")
    workers.start(FAKE_STEP_S="0.01")
    async with broker_bot(double, tmp_path, nats_server.url, job_steps=60) as bot:
        await double.post_message("!stylize", attachments=[("photo.png", PHOTO, "image/png"),
                                                          ("painting.png", PAINTING, "image/png")])
        status = await double.wait_for("message_create")
        job_id = job_id_of(status.content)
        await wait_until(lambda: bot.journal.get_job(job_id), 30, "the job in the journal")
        record = await wait_until(_submitted(bot, job_id), 30, "the job to be submitted")
        pid = await wait_until(lambda: pid_running(bot.engine, record.engine_job_id), 60, "a worker to run the job")
        os.kill(pid, signal.SIGKILL)
        lost = await double.wait_for("message_edit", lambda a: a.message_id == status.message_id
                                     and "GPU worker was lost; restarting on another" in (a.content or ""), timeout=60)
        final = await final_of(double, status.message_id, timeout=90)
    assert lost.content.startswith(f"<@{double.user.id}>")
    assert "done" in final["content"]


def _submitted(bot: StyleBot, job_id: str):
    async def check():
        record = await bot.journal.get_job(job_id)
        return record if record is not None and record.engine_job_id else None
    return check


async def test_a_broker_crash_makes_jobs_wait_and_loses_nothing(discord_double: DiscordDouble, nats_server, workers,
                                                               tmp_path) -> None:
    double = discord_double
    async with broker_bot(double, tmp_path, nats_server.url) as bot:
        await double.post_message("!stylize", attachments=[("photo.png", PHOTO, "image/png"),
                                                          ("painting.png", PAINTING, "image/png")])
        status = await double.wait_for("message_create")
        job_id = job_id_of(status.content)
        await wait_until(_submitted(bot, job_id), 30, "the job to be published")  # queued; no worker yet
        nats_server.kill()
        await double.wait_for("message_edit", lambda a: a.message_id == status.message_id
                              and "the style engine is offline" in (a.content or ""), timeout=60)
        nats_server.start()  # the same store: the job is still queued there
        workers.start()
        final = await final_of(double, status.message_id, timeout=90)
        record = await settled(bot, job_id)
    assert "done" in final["content"] and final["attachments"]
    assert record.attempts == 1  # the same submission, not a second one


async def test_presets_in_broker_mode(discord_double: DiscordDouble, nats_server, workers, tmp_path) -> None:
    """!presets lists the workers' presets; !preset add/remove (a server's own) and a global preset both run."""
    double = discord_double
    workers.start()
    async with broker_bot(double, tmp_path, nats_server.url) as bot:
        await wait_until(lambda: bot.engine.workers(), 60, "the worker")
        await double.post_message("!presets")
        listing = await double.wait_for("message_create")
        await double.post_message("!preset add Stripes", author=double.owner,
                                  attachments=[("stripes.png", PAINTING, "image/png")])
        added = await double.wait_for("message_create")
        await double.post_message("!stylize stripes", attachments=[("p.png", PHOTO, "image/png")])
        own = await final_of(double, (await double.wait_for("message_create")).message_id, timeout=60)
        await double.post_message("!stylize swirls", attachments=[("p.png", PHOTO, "image/png")])
        builtin = await final_of(double, (await double.wait_for("message_create")).message_id, timeout=60)
        await double.post_message("!preset remove stripes", author=double.owner)
        removed = await double.wait_for("message_create")
    assert all(f"`{name}`" in listing.content for name in ("mosaic", "swirls", "brushstrokes"))
    assert "Added the preset `stripes`" in added.content and "Removed the preset `stripes`" in removed.content
    assert "done" in own["content"] and own["attachments"]
    assert "done" in builtin["content"] and builtin["attachments"]
