"""Restarts, crashes and shutdowns lose no job: real processes (`python -m bot` against the Discord double, its
embedded engine, a standalone engine) are killed and started again on the same journal, and each job the bot
accepted is answered exactly once.

The engine is the real one (VGG19 on the CPU, 64 px), so these tests take a while; each waits on what the
channel shows or the logs say, never on fixed sleeps.
"""
from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.discord_double import DiscordDouble  # isort: skip  (before discord)

from tests.bot.e2e.processes import BotProcess, EngineProcess, alive, bot_environ, until  # isort: skip
from tests.bot.support import PAINTING, PHOTO, job_id_of  # isort: skip

pytestmark = pytest.mark.asyncio

FINAL_MARKS = ("✅", "❌", "🚫")
# A cold engine's first job at 64 px takes ~15 s on a busy CPU; restarts add their own start-up.
JOB_TIMEOUT_S = 240.0


@pytest.fixture
def processes() -> Iterator[list]:
    """Every process a test starts, killed afterwards if still running (embedded engines by their pid)."""
    started: list = []
    yield started
    for proc in started:
        engine_pids = [int(p) for p in re.findall(r"engine is ready \(pid (\d+)\)", proc.all_logs())] if isinstance(
            proc, BotProcess) and proc.starts else []
        proc.stop()
        for pid in engine_pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def start_bot(double: DiscordDouble, tmp_path: Path, processes: list, **env: str) -> BotProcess:
    bot = BotProcess(double.url, bot_environ(double, tmp_path, **env), tmp_path)
    processes.append(bot)
    return bot.start()


async def connected(double: DiscordDouble, bot: BotProcess) -> None:
    """The bot process is up: it synced its commands to the dev guild (setup_hook) and connected."""
    await double.wait_for("commands_sync", timeout=180)
    await bot.wait_log(r"connected as ", timeout=60)


async def post_job(double: DiscordDouble) -> tuple[int, str]:
    await double.post_message("!stylize", attachments=[("photo.png", PHOTO, "image/png"),
                                                       ("painting.png", PAINTING, "image/png")])
    status = await double.wait_for("message_create", timeout=60)
    return int(status.message_id), job_id_of(status.content)


async def painting(double: DiscordDouble, status_id: int) -> None:
    """The engine is running the job (its progress reached the status message)."""
    await double.wait_for("message_edit", lambda a: a.message_id == status_id and "is painting" in (a.content or ""),
                          timeout=JOB_TIMEOUT_S)


def answers(double: DiscordDouble, job_id: str) -> list:
    return [a for a in double.actions if a.kind in ("message_create", "message_edit")
            and f"Job `{job_id}`" in (a.content or "") and any(m in (a.content or "") for m in FINAL_MARKS)]


async def answered_once(double: DiscordDouble, status_id: int, job_id: str) -> None:
    """The job ends done, with its image, on its status message, and nothing else ever said it ended."""
    await double.wait_for("message_edit", lambda a: a.message_id == status_id and "✅" in (a.content or ""),
                          timeout=JOB_TIMEOUT_S)
    finals = answers(double, job_id)
    assert len(finals) == 1, [a.content for a in finals]
    assert finals[0].message_id == status_id and finals[0].attachments, finals[0].content
    assert finals[0].attachments[0]["filename"] == f"stylized-{job_id}.png"


def no_traceback(*procs) -> None:  # noqa: ANN002
    for proc in procs:
        text = proc.all_logs()
        assert "Traceback" not in text, text[-4000:]


# --- the embedded engine (no ENGINE_URLS) -----------------------------------------------------------------------


async def test_bot_killed_mid_job_takes_its_engine_along_and_the_next_start_answers(discord_double, tmp_path,
                                                                                    processes):
    bot = start_bot(discord_double, tmp_path, processes)
    await connected(discord_double, bot)
    status_id, job_id = await post_job(discord_double)
    await painting(discord_double, status_id)
    old_engine = bot.engine_pid

    bot.signal(signal.SIGKILL)
    assert await bot.exited() == -signal.SIGKILL
    await until(lambda: not alive(old_engine), 30, "the embedded engine to die with the bot")

    bot.start()  # same journal; its engine gets a new port and token
    await answered_once(discord_double, status_id, job_id)
    assert bot.engine_pid != old_engine
    assert re.search(rf"job {job_id} was on http://127\.0\.0\.1:\d+, an engine no longer in use; resubmitting",
                     bot.log())
    no_traceback(bot)


async def test_bot_and_engine_killed_together_then_this_and_the_next_job_are_answered(discord_double, tmp_path,
                                                                                      processes):
    bot = start_bot(discord_double, tmp_path, processes)
    await connected(discord_double, bot)
    status_id, job_id = await post_job(discord_double)
    await painting(discord_double, status_id)
    engine = bot.engine_pid

    os.kill(engine, signal.SIGKILL)  # a container stop or the OOM killer: both at once
    bot.signal(signal.SIGKILL)
    await bot.exited()
    await until(lambda: not alive(engine), 30, "the engine to be gone")

    bot.start()
    await connected(discord_double, bot)
    second_id, second_job = await post_job(discord_double)  # the same user's next job does not wait forever
    await answered_once(discord_double, status_id, job_id)
    await answered_once(discord_double, second_id, second_job)
    no_traceback(bot)


async def test_a_crashed_embedded_engine_is_restarted_and_its_job_resubmitted(discord_double, tmp_path, processes):
    bot = start_bot(discord_double, tmp_path, processes)
    await connected(discord_double, bot)
    status_id, job_id = await post_job(discord_double)
    await painting(discord_double, status_id)
    engine = bot.engine_pid

    os.kill(engine, signal.SIGKILL)
    await bot.wait_log(rf"the embedded engine \(pid {engine}\) exited with status -9; starting it again")
    await answered_once(discord_double, status_id, job_id)
    assert bot.engine_pid != engine and bot.proc.poll() is None
    assert f"engine lost job {job_id}" in bot.log()  # the new engine never had it: resubmitted
    no_traceback(bot)


async def test_sigterm_to_the_bot_shuts_down_cleanly_and_the_next_start_answers(discord_double, tmp_path,
                                                                                processes):
    bot = start_bot(discord_double, tmp_path, processes)
    await connected(discord_double, bot)
    status_id, job_id = await post_job(discord_double)
    await painting(discord_double, status_id)
    engine = bot.engine_pid

    bot.signal(signal.SIGTERM)
    assert await bot.exited(timeout=120) == 0, bot.log()[-3000:]
    assert not alive(engine), "the embedded engine outlived the bot"
    log = bot.log()
    assert "received SIGTERM; shutting down" in log and "the embedded engine stopped" in log
    assert not answers(discord_double, job_id), "a shutdown must not end the user's job"

    bot.start()
    await answered_once(discord_double, status_id, job_id)
    no_traceback(bot)


async def test_sigterm_to_the_embedded_engine_delivers_the_running_job_once(discord_double, tmp_path, processes):
    bot = start_bot(discord_double, tmp_path, processes)
    await connected(discord_double, bot)
    status_id, job_id = await post_job(discord_double)
    await painting(discord_double, status_id)
    engine = bot.engine_pid

    os.kill(engine, signal.SIGTERM)  # the grace period (60 s here) is longer than the job
    await answered_once(discord_double, status_id, job_id)
    await bot.wait_log(rf"the embedded engine \(pid {engine}\) exited with status 0; starting it again")
    await bot.wait_log(r"the embedded engine is ready", count=2)
    assert "resubmitting" not in bot.log(), "the job ran twice"
    no_traceback(bot)


# --- an ENGINE_URLS engine ----------------------------------------------------------------------------------------


async def test_engine_urls_engine_and_bot_both_killed_in_turn(discord_double, tmp_path, processes):
    from bot.engine.process import free_port

    engine = EngineProcess(free_port(), "restart-tests-token-0123456789", tmp_path)
    processes.append(engine)
    engine.start()
    await engine.wait_log(r"worker 0 ready")
    bot = start_bot(discord_double, tmp_path, processes, ENGINE_URLS=engine.url, ENGINE_TOKEN=engine.token)
    await connected(discord_double, bot)
    status_id, job_id = await post_job(discord_double)
    await painting(discord_double, status_id)

    engine.signal(signal.SIGKILL)
    await engine.exited()
    bot.signal(signal.SIGKILL)
    await bot.exited()
    bot.start()  # the engine is still down: the job waits ("offline") instead of failing
    await discord_double.wait_for("message_edit", lambda a: a.message_id == status_id and "offline" in (a.content or ""),
                                  timeout=120)
    engine.start()  # the same address
    await answered_once(discord_double, status_id, job_id)
    no_traceback(bot, engine)


# --- start-up problems -------------------------------------------------------------------------------------------


async def test_a_bad_token_is_one_sentence_and_no_retry(discord_double, tmp_path, processes):
    bot = start_bot(discord_double, tmp_path, processes, DISCORD_TOKEN="not-the-token",
                    ENGINE_URLS="http://127.0.0.1:9")
    assert await bot.exited() == 2
    log = bot.log()
    assert "Discord refused DISCORD_TOKEN: copy the token again from the Developer Portal" in log
    assert "Traceback" not in log and log.count("ERROR") == 1, log


async def test_the_message_content_intent_off_is_one_sentence(discord_double_factory, tmp_path, processes):
    double = await discord_double_factory(privileged_intents=0)
    bot = start_bot(double, tmp_path, processes, ENGINE_URLS="http://127.0.0.1:9")
    assert await bot.exited(timeout=120) == 2
    log = bot.log()
    assert "the Message Content intent is off: switch on Message Content Intent" in log
    assert "Traceback" not in log, log


async def test_discord_unreachable_is_retried_until_sigint(discord_double, tmp_path, processes):
    from bot.engine.process import free_port

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    bot = BotProcess(down, bot_environ(discord_double, tmp_path, ENGINE_URLS="http://127.0.0.1:9"), tmp_path)
    processes.append(bot)
    bot.start()
    await bot.wait_log(r"cannot reach Discord \(.*\); trying again in \d+ s", count=2, timeout=60)
    bot.signal(signal.SIGINT)  # Ctrl-C: the same clean stop as SIGTERM
    assert await bot.exited() == 0
    log = bot.log()
    assert "received SIGINT; shutting down" in log and "Traceback" not in log, log
