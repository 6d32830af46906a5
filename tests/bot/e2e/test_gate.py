"""Every way to start a job passes the same gate (bot/gate.py): with the bot allowed only in #art, each entry
point is refused in #general with the same sentence and starts nothing there, and works in #art."""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.bot.support import PAINTING, PHOTO, final_of, job_id_of, settled  # isort: skip
from devtools.discord_double import DiscordDouble  # isort: skip
from devtools.discord_double.state import Channel  # isort: skip

pytestmark = pytest.mark.asyncio
PHOTO_FILE = ("photo.png", PHOTO, "image/png")
EPHEMERAL = 64


async def _job_answer(double: DiscordDouble, channel: Channel) -> str:
    """The status message of the job just started in `channel`, once the job is finished."""
    status = await double.wait_for("message_create", lambda a: "Job `" in (a.content or ""), channel=channel)
    await final_of(double, status.message_id)
    return status.content


# -- the entry points: `prepare` runs before the allow-list exists, `attempt` after; attempt returns what the
#    user reads in answer (the refusal, or the accepted job's status message).


async def _nothing(double: DiscordDouble, channel: Channel) -> None:
    return None


async def _prefix(double: DiscordDouble, channel: Channel, _: Any) -> str:
    await double.post_message("!stylize mosaic", channel=channel, attachments=[PHOTO_FILE])
    reply = await double.wait_for("message_create", channel=channel)
    if "Job `" in reply.content:
        await final_of(double, reply.message_id)
    return reply.content


async def _slash(double: DiscordDouble, channel: Channel, _: Any) -> str:
    ix = await double.invoke_slash("stylize", {"preset": "mosaic"}, attachments={"content": ("p.png", PHOTO)},
                                   channel=channel)
    response = await ix.wait_response()
    if response.response_type == 4:  # refused before deferring: only the user sees it
        assert response.message["flags"] & EPHEMERAL
        return response.content
    status = await ix.wait_for("followup_create")
    await final_of(double, status.message_id)
    return status.content


async def _stylize_with_menu(double: DiscordDouble, channel: Channel, _: Any) -> str:
    photo = await double.post_message("a photo", channel=channel, attachments=[PHOTO_FILE])
    ix = await double.invoke_message_command("Stylize with…", photo)
    response = await ix.wait_response()
    assert response.response_type == 4 and response.message["flags"] & EPHEMERAL
    if not response.message.get("components"):
        return response.content
    picked = await double.select(response.message, "nst:pick-preset", ["swirls"])
    await picked.wait_response()
    return await _job_answer(double, channel)


async def _open_picker(double: DiscordDouble, channel: Channel) -> dict[str, Any]:
    photo = await double.post_message("a photo", channel=channel, attachments=[PHOTO_FILE])
    ix = await double.invoke_message_command("Stylize with…", photo)
    picker = await ix.wait_response()
    assert picker.message["components"], picker.content
    return picker.message


async def _pick_preset(double: DiscordDouble, channel: Channel, picker: dict[str, Any]) -> str:
    ix = await double.select(picker, "nst:pick-preset", ["swirls"])
    response = await ix.wait_response()
    assert response.response_type == 7  # the picker itself is edited: no components left either way
    assert not response.message.get("components")
    if not response.content.startswith("Stylizing with"):
        return response.content
    return await _job_answer(double, channel)


async def _use_as_style_menu(double: DiscordDouble, channel: Channel, _: Any) -> str:
    art = await double.post_message("my painting", channel=channel, attachments=[("art.png", PAINTING, "image/png")])
    ix = await double.invoke_message_command("Use as style", art)
    response = await ix.wait_response()
    if response.response_type == 5:
        response = await ix.wait_for("followup_create")
    assert response.message["flags"] & EPHEMERAL
    return response.content


async def _finished_job(double: DiscordDouble, channel: Channel) -> dict[str, Any]:
    await double.post_message("!stylize mosaic strong", channel=channel, attachments=[PHOTO_FILE])
    status = await double.wait_for("message_create", channel=channel)
    return await final_of(double, status.message_id)


def _press(action: str) -> Callable[[DiscordDouble, Channel, Any], Awaitable[str]]:
    async def press(double: DiscordDouble, channel: Channel, result: dict[str, Any]) -> str:
        ix = await double.press_button(result, f"nst:{action}:{job_id_of(result['content'])}")
        response = await ix.wait_response()
        if response.response_type != 6:
            assert response.message["flags"] & EPHEMERAL
            return response.content
        return await _job_answer(double, channel)

    return press


@dataclass(frozen=True)
class EntryPoint:
    prepare: Callable[[DiscordDouble, Channel], Awaitable[Any]]
    attempt: Callable[[DiscordDouble, Channel, Any], Awaitable[str]]
    accepted: str
    """In the answer in an allowed channel."""


ENTRY_POINTS = {
    "prefix !stylize": EntryPoint(_nothing, _prefix, "is queued"),
    "slash /stylize": EntryPoint(_nothing, _slash, "is queued"),
    "menu Stylize with…": EntryPoint(_nothing, _stylize_with_menu, "is queued"),
    "preset picker": EntryPoint(_open_picker, _pick_preset, "is queued"),
    "menu Use as style": EntryPoint(_nothing, _use_as_style_menu, "Saved `art.png` as your style"),
    **{f"button {action}": EntryPoint(_finished_job, _press(action), "is queued")
       for action in ("again", "stronger", "weaker", "colours")},
}


@pytest.mark.parametrize("name", ENTRY_POINTS)
async def test_an_entry_point_outside_the_allowed_channels(name, harness, engine, discord_double: DiscordDouble):
    double = discord_double
    entry = ENTRY_POINTS[name]
    general, art = double.channel, double.add_channel("art")
    async with harness.run(engine) as bot:
        ready = {c.id: await entry.prepare(double, c) for c in (general, art)}
        await double.post_message(f"!config allow <#{art.id}>", author=double.owner)
        await double.wait_for("message_create", lambda a: "Stylize now runs in" in (a.content or ""))
        jobs_before = _jobs_in(double, general)

        refused = await entry.attempt(double, general, ready[general.id])
        jobs_after = _jobs_in(double, general)
        style_saved = await bot.journal.user_style(double.user.id)
        accepted = await entry.attempt(double, art, ready[art.id])
        if entry.accepted == "is queued":
            await settled(bot, job_id_of(accepted))

    assert refused == f"I only stylize in <#{art.id}> on this server."
    assert jobs_after == jobs_before and style_saved is None
    assert entry.accepted in accepted


def _jobs_in(double: DiscordDouble, channel: Channel) -> int:
    return sum("Job `" in m["content"] for m in double.bot_messages(channel))


async def test_the_guild_config_is_read_once_per_request(harness, engine, discord_double: DiscordDouble,
                                                        monkeypatch: pytest.MonkeyPatch):
    double = discord_double
    async with harness.run(engine) as bot:
        reads: list[int | None] = []
        real = bot.journal.guild_config

        async def counted(guild_id: int | None) -> Any:
            reads.append(guild_id)
            return await real(guild_id)

        monkeypatch.setattr(bot.journal, "guild_config", counted)
        result = await _finished_job(double, double.channel)
        command_reads = len(reads)
        await _press("again")(double, double.channel, result)

    assert command_reads == 1
    assert len(reads) == 2  # one more for the button


async def test_the_cooldown_is_the_same_sentence_through_command_button_and_menu(harness, engine,
                                                                                discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine, user_cooldown_seconds=600):
        result = await _finished_job(double, double.channel)
        await double.post_message("!stylize mosaic", attachments=[PHOTO_FILE])
        by_command = (await double.wait_for("message_create")).content
        by_button = await _press("again")(double, double.channel, result)
        by_menu = await _stylize_with_menu(double, double.channel, None)
        ix = await double.press_button(result, f"nst:weaker:{job_id_of(result['content'])}", user=double.owner)
        admin_pressed = await ix.wait_response()
        await _job_answer(double, double.channel)

    def without_seconds(text: str) -> str:
        return re.sub(r"\d+ s\b", "N s", text)

    assert without_seconds(by_command) == "Please wait N s before starting another job."
    assert without_seconds(by_button) == without_seconds(by_command) == without_seconds(by_menu)
    assert admin_pressed.response_type == 6  # admins are exempt from the cooldown


async def test_images_off_the_allowed_hosts_are_refused_by_the_menus(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine, allowed_cdn_hosts=("cdn.discordapp.com",)):
        stylize_with = await _stylize_with_menu(double, double.channel, None)
        use_as_style = await _use_as_style_menu(double, double.channel, None)
    assert "I can only use images uploaded to Discord" in stylize_with
    assert "I can only use images uploaded to Discord" in use_as_style
    assert double.cdn.requests == []
