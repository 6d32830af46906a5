"""Buttons, cancel, limits, and durability: engine down then up, engine restart, bot restart, Discord 429s."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.bot.support import (  # isort: skip
    PAINTING, PHOTO, buttons, decode, final_of, job_id_of, settled, until,
)
from devtools.discord_double import DiscordDouble  # isort: skip

pytestmark = pytest.mark.asyncio
TWO = [("photo.png", PHOTO, "image/png"), ("art.png", PAINTING, "image/png")]


async def _done(double: DiscordDouble, content: str = "!stylize", files=TWO, **kwargs):
    await double.post_message(content, attachments=files, **kwargs)
    status = await double.wait_for("message_create")
    return status, await final_of(double, status.message_id)


async def test_every_result_button(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine) as bot:
        _, first = await _done(double, "!stylize strong seed=5")
        first_id = job_id_of(first["content"])
        results = {}
        for action in ("again", "stronger", "weaker", "colours"):
            ix = await double.press_button(first, f"nst:{action}:{first_id}")
            assert (await ix.wait_response()).response_type == 6
            status = await double.wait_for("message_create")
            results[action] = await final_of(double, status.message_id)
            assert status.message["message_reference"]["message_id"] == first["id"]
        records = {a: await settled(bot, job_id_of(m["content"])) for a, m in results.items()}

    assert records["again"].params.seed != 5 and records["again"].params.strength == "strong"
    assert records["stronger"].params.strength == "bold"
    assert records["weaker"].params.strength == "balanced"
    assert records["colours"].params.preserve_colors
    assert all(r.parent_id == first_id and r.state == "done" for r in records.values())
    for message in results.values():
        assert decode(await double.download(message["attachments"][0])).size == (32, 21)
    assert [c["strength"] for c in engine.fake.calls] == [6.0, 6.0, 7.0, 5.0, 6.0]


async def test_only_the_requester_or_an_admin_can_press(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    bob = double.add_user("bob")
    async with harness.run(engine):
        _, final = await _done(double)
        job_id = job_id_of(final["content"])
        ix = await double.press_button(final, f"nst:again:{job_id}", user=bob)
        refused = await ix.wait_response()
        ix2 = await double.press_button(final, f"nst:weaker:{job_id}", user=double.owner)  # owns the guild
        await ix2.wait_response()
        status = await double.wait_for("message_create")
        await final_of(double, status.message_id)

    assert refused.response_type == 4 and refused.message["flags"] & 64  # ephemeral
    assert f"Only <@{double.user.id}>" in refused.content
    assert status.content.startswith(f"<@{double.owner.id}>")


async def test_cancel_a_running_job(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    engine.fake.hold = True
    async with harness.run(engine) as bot:
        await double.post_message("!stylize", attachments=TWO)
        status = await double.wait_for("message_create")
        job_id = job_id_of(status.content)
        await double.wait_for("message_edit", lambda a: a.message_id == status.message_id and "started" in a.content)
        ix = await double.press_button(status.message, f"nst:cancel:{job_id}")
        await ix.wait_response()
        final = await final_of(double, status.message_id)
        record = await settled(bot, job_id)
        engine_job = engine.job(record.engine_job_id)
        await until(lambda: engine_job.state == "cancelled")

    assert "cancelled by Alice" in final["content"]
    assert buttons(final) == [] and final["attachments"] == []
    assert record.state == "cancelled"


async def test_cancel_a_queued_job_waiting_behind_the_users_own(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    engine.fake.hold = True
    async with harness.run(engine, max_queued_per_user=2) as bot:
        await double.post_message("!stylize", attachments=TWO)
        first = await double.wait_for("message_create")
        await double.post_message("!stylize", attachments=TWO)
        second = await double.wait_for("message_create")
        assert "after your 1 earlier job" in second.content
        ix = await double.press_button(second.message, f"nst:cancel:{job_id_of(second.content)}")
        await ix.wait_response()
        final2 = await final_of(double, second.message_id)
        engine.fake.release.set()
        final1 = await final_of(double, first.message_id)
        await settled(bot, job_id_of(first.content))

    assert "cancelled" in final2["content"] and final1["attachments"]
    assert len(engine.fake.calls) == 1  # the second job never reached the engine


async def test_user_queue_limit_guild_cap_and_cooldown(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    bob = double.add_user("bob")
    engine.fake.hold = True
    async with harness.run(engine, max_queued_per_user=1, guild_queue_cap=3, user_cooldown_seconds=0) as bot:
        replies = []
        for _ in range(3):
            await double.post_message("!stylize", attachments=TWO)
            replies.append(await double.wait_for("message_create"))
        await double.post_message("!stylize", attachments=TWO, author=bob)
        bob_ok = await double.wait_for("message_create")
        await double.post_message("!stylize", attachments=TWO, author=double.owner)
        cap = await double.wait_for("message_create")
        engine.fake.release.set()
        for reply in (replies[0], replies[1], bob_ok):
            await final_of(double, reply.message_id)
        await until(lambda: len(bot.scheduler) == 0)

    assert "queued" in replies[0].content and "after your 1 earlier job" in replies[1].content
    assert "You already have a job running and 1 waiting" in replies[2].content
    assert "queued" in bob_ok.content
    assert "This server's queue is full (3 jobs)" in cap.content


async def test_cooldown(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine, user_cooldown_seconds=30):
        await double.post_message("!stylize", attachments=TWO)
        first = await double.wait_for("message_create")
        await double.post_message("!stylize", attachments=TWO)
        second = await double.wait_for("message_create")
        await final_of(double, first.message_id)
    assert "Please wait" in second.content and "before starting another job" in second.content


async def test_engine_down_then_up(harness, engine_factory, discord_double: DiscordDouble):
    double = discord_double
    engine = await engine_factory(start=False)
    from bot.engine.process import free_port

    engine.port = free_port()
    async with harness.run(engine.url):
        await double.post_message("!stylize", attachments=TWO)
        status = await double.wait_for("message_create")
        offline = await double.wait_for("message_edit", lambda a: a.message_id == status.message_id
                                        and "offline" in a.content, timeout=10)
        await engine.start()
        final = await final_of(double, status.message_id, timeout=15)
    assert "your job will run when it is back" in offline.content
    assert final["attachments"] and "done" in final["content"]


async def test_engine_restart_mid_job_resubmits(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    engine.fake.hold = True
    async with harness.run(engine) as bot:
        await double.post_message("!stylize", attachments=TWO)
        status = await double.wait_for("message_create")
        await double.wait_for("message_edit", lambda a: a.message_id == status.message_id and "started" in a.content)
        first_engine_job = (await bot.journal.get_job(job_id_of(status.content))).engine_job_id
        await engine.stop()  # cancels the running job with 'engine_shutdown' (after its grace)
        engine.fake.hold = False
        await engine.start()
        final = await final_of(double, status.message_id, timeout=20)
        record = await settled(bot, job_id_of(status.content))
    assert final["attachments"]
    assert record.engine_job_id != first_engine_job and record.attempts == 2


async def test_bot_restarted_mid_job_still_answers(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    engine.fake.hold = True
    async with harness.run(engine) as bot:
        await double.post_message("!stylize", attachments=TWO)
        status = await double.wait_for("message_create")
        job_id = job_id_of(status.content)
        await double.wait_for("message_edit", lambda a: a.message_id == status.message_id and "started" in a.content)
        engine_job_id = (await bot.journal.get_job(job_id)).engine_job_id
    # The bot is gone; the engine finishes the job meanwhile.
    engine.fake.release.set()
    await until(lambda: engine.job(engine_job_id).state == "done")
    async with harness.run(engine) as bot:
        final = await final_of(double, status.message_id, timeout=15)
        record = await settled(bot, job_id)
    assert final["attachments"] and record.engine_job_id == engine_job_id  # reattached, not resubmitted
    assert len(engine.fake.calls) == 1


async def test_bot_restarted_before_submitting_resubmits(harness, engine_factory, discord_double: DiscordDouble):
    double = discord_double
    from bot.engine.process import free_port

    engine = await engine_factory(start=False)
    engine.port = free_port()
    async with harness.run(engine.url):
        await double.post_message("!stylize", attachments=TWO)
        status = await double.wait_for("message_create")
        await double.wait_for("message_edit", lambda a: a.message_id == status.message_id and "offline" in a.content)
    await engine.start()
    async with harness.run(engine):
        final = await final_of(double, status.message_id, timeout=15)
    assert final["attachments"]


async def test_a_429_from_discord_while_editing_progress(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    engine.fake.hold = True
    async with harness.run(engine):
        double.fail_next("PATCH", "/channels/{channel_id}/messages/{message_id}", 429, retry_after=0.3, times=2)
        await double.post_message("!stylize", attachments=TWO)
        status = await double.wait_for("message_create")
        await double.wait_for("message_edit", lambda a: a.message_id == status.message_id)
        engine.fake.release.set()
        final = await final_of(double, status.message_id)
    limited = [r for r in double.requests if r.method == "PATCH" and r.status == 429]
    assert len(limited) == 2 and final["attachments"]


async def test_a_flooding_user_does_not_starve_others(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    bob = double.add_user("bob")
    engine.fake.hold = True
    async with harness.run(engine, max_queued_per_user=3) as bot:
        alice = []
        for _ in range(4):
            await double.post_message("!stylize", attachments=TWO)
            alice.append(await double.wait_for("message_create"))
        await until(lambda: len(engine.fake.calls) == 1)
        await double.post_message("!stylize", attachments=TWO, author=bob)
        bob_status = await double.wait_for("message_create")
        engine.fake.release.set()
        for status in (*alice, bob_status):
            await final_of(double, status.message_id)
        records = [await settled(bot, job_id_of(s.content)) for s in (*alice, bob_status)]
    order = sorted(records, key=lambda r: engine.job(r.engine_job_id).started_mono)
    # Bob's job runs second: right after Alice's first, before her other three.
    assert [r.user_id for r in order][:2] == [double.user.id, bob.id]


async def test_result_fits_the_channels_real_upload_limit(engine_factory, discord_double_factory, tmp_path):
    # The channel refuses the upload although the guild's advertised limit is larger: the bot asks the
    # engine for the same result re-encoded smaller (GET .../result?max_bytes=N) until Discord takes it.
    limit = 150_000
    double = await discord_double_factory(upload_limit=limit)
    engine = await engine_factory(max_size=384)
    from tests.bot.support import BotRunner

    noise = Image.fromarray(np.random.default_rng(7).integers(0, 256, (384, 384, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    harness = BotRunner(double, tmp_path)
    async with harness.run(engine, default_size=384, max_size=384):
        await double.post_message("!stylize", attachments=[("p.png", buffer.getvalue(), "image/png"),
                                                           ("s.png", PAINTING, "image/png")])
        status = await double.wait_for("message_create")
        final = await final_of(double, status.message_id)
    data = await double.download(final["attachments"][0])
    assert len(data) <= limit and decode(data).format == "JPEG"
    assert final["attachments"][0]["filename"].endswith(".jpg")
    assert any(r.status == 413 for r in double.requests)  # the first try was the full PNG


async def test_cancel_while_a_status_edit_is_held_by_a_429(harness, engine, discord_double: DiscordDouble):
    """Cancel while the job's status edit is being retried after a 429: the job still ends 'cancelled' at once.
    (The runner shields Discord requests from cancellation; a request cancelled in flight on a fresh bucket
    can leave discord.py's rate limiter waiting 30 s. This test does not force that exact case.)"""
    double = discord_double
    engine.fake.hold = True
    async with harness.run(engine, max_queued_per_user=2):
        await double.post_message("!stylize", attachments=TWO)
        first = await double.wait_for("message_create")
        await double.wait_for("message_edit", lambda a: a.message_id == first.message_id and "started" in a.content)
        double.fail_next("PATCH", "/channels/{channel_id}/messages/{message_id}", 429, retry_after=0.5)
        await double.post_message("!stylize", attachments=TWO)
        second = await double.wait_for("message_create")
        await until(lambda: any(r.method == "PATCH" and r.status == 429 for r in double.requests))
        ix = await double.press_button(second.message, f"nst:cancel:{job_id_of(second.content)}")
        await ix.wait_response()
        final2 = await final_of(double, second.message_id, timeout=5)
        engine.fake.release.set()
        await final_of(double, first.message_id, timeout=5)
    assert "cancelled" in final2["content"]


async def test_cancel_before_the_job_task_takes_its_first_step(harness, engine, discord_double: DiscordDouble):
    # Under load the Cancel button can be handled before the job's task has run at all; a task
    # cancelled then never entered its try block and the job hung, unanswered.
    double = discord_double
    async with harness.run(engine) as bot:
        spawn = bot.runner.spawn
        answered: list[bool] = []

        def spawn_then_cancel(job):
            spawn(job)
            coro = bot.runner.cancel(job, "alice")  # no await inside: run it to the end right here
            try:
                coro.send(None)
            except StopIteration as done:
                answered.append(done.value)

        bot.runner.spawn = spawn_then_cancel
        await double.post_message("!stylize", attachments=TWO)
        status = await double.wait_for("message_create")
        final = await final_of(double, status.message_id)
        await settled(bot, job_id_of(status.content))
    assert answered == [True]
    assert "cancelled" in final["content"]
    assert engine.fake.calls == []  # it never reached the engine


async def test_an_engine_restarted_with_another_token_gets_the_job_again(harness, engine_factory,
                                                                         discord_double: DiscordDouble):
    """ENGINE_TOKEN rotated: the engine restarted on the same address with a new token, and the bot with it.
    The new engine never had the job: it is resubmitted, not failed."""
    double = discord_double
    engine = await engine_factory()
    engine.fake.hold = True
    async with harness.run(engine) as bot:
        await double.post_message("!stylize", attachments=TWO)
        status = await double.wait_for("message_create")
        job_id = job_id_of(status.content)
        await double.wait_for("message_edit", lambda a: a.message_id == status.message_id and "started" in a.content)
        first_engine_job = (await bot.journal.get_job(job_id)).engine_job_id
    await engine.stop()
    new_token = "a-new-engine-token-0123456789"
    restarted = await engine_factory(port=engine.port, token=new_token)
    async with harness.run(restarted, engine_token=new_token) as bot:
        final = await final_of(double, status.message_id, timeout=20)
        record = await settled(bot, job_id)
    assert final["attachments"] and "done" in final["content"]
    assert record.engine_job_id != first_engine_job and record.attempts == 2


async def test_a_token_the_engine_refuses_ends_the_job_with_that_reason(harness, engine, discord_double: DiscordDouble):
    """The bot restarted with a token the (still running) engine refuses: its job's calls get 401. The job is
    resubmitted, the submission is refused too, and the user gets the engine's sentence, not a generic failure."""
    double = discord_double
    engine.fake.hold = True
    async with harness.run(engine):
        await double.post_message("!stylize", attachments=TWO)
        status = await double.wait_for("message_create")
        await double.wait_for("message_edit", lambda a: a.message_id == status.message_id and "started" in a.content)
    async with harness.run(engine, engine_token="not-the-engine-token-0123456789") as bot:
        final = await final_of(double, status.message_id, timeout=20)
        record = await settled(bot, job_id_of(status.content))
    assert "❌" in final["content"] and "A valid engine token is required." in final["content"]
    assert record.error == "unauthorized"
