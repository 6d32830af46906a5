"""Misuse gets a short, clear answer: never silence, never a traceback."""
from __future__ import annotations

import pytest

from tests.bot.support import PAINTING, PHOTO  # isort: skip
from devtools.discord_double import DiscordDouble, Upload  # isort: skip

pytestmark = pytest.mark.asyncio


def _clean(text: str | None) -> str:
    assert text, "the bot answered with nothing"
    assert "Traceback" not in text and "Error" not in text, text
    return text


@pytest.mark.parametrize(("content", "files", "expected"), [
    ("!stylize", [], "I need a photo"),
    ("!stylize mosaic", [], "I need a photo"),
    ("!stylize", [("photo.png", PHOTO, "image/png")], "I also need a style"),
    ("!stylize mosiac", [("photo.png", PHOTO, "image/png")], "Did you mean `mosaic`?"),
    ("!stylize", [("notes.txt", b"hello", "text/plain"), ("b.png", PAINTING, "image/png")], "is not an image"),
    ("!stylize", [("fake.png", b"this is not a png", "image/png"), ("b.png", PAINTING, "image/png")],
     "not an image I can read"),
    ("!stylize mosaic", [("a.png", PHOTO, "image/png"), ("b.png", PAINTING, "image/png")], "not both"),
    ("!stylize", [("a.png", PHOTO, "image/png")] * 3, "more than two images"),
    ("!stylize mosaic sideways", [("a.png", PHOTO, "image/png")], "I don't understand `sideways`"),
    ("!stylize mosaic size=huge", [("a.png", PHOTO, "image/png")], "Size must be a number"),
    ("!stylize Bad/Name", [("a.png", PHOTO, "image/png")], "not a valid preset name"),
])
async def test_prefix_misuse_is_answered(harness, engine, discord_double: DiscordDouble, content, files, expected):
    double = discord_double
    async with harness.run(engine):
        posted = await double.post_message(content, attachments=files)
        reply = await double.wait_for("message_create")
    assert expected in _clean(reply.content)
    # A reply to the user's message: in a busy channel they see it is theirs.
    assert reply.message["message_reference"]["message_id"] == posted["id"]
    assert engine.fake.calls == []


async def test_attachment_too_large_is_refused_before_download(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine, max_attachment_bytes=2048):
        big = PHOTO + b"\0" * 4096
        await double.post_message("!stylize mosaic", attachments=[("big.png", big, "image/png")])
        reply = await double.wait_for("message_create")
    assert "the limit is" in _clean(reply.content)
    assert not any("big.png" in path for path, _ in double.cdn.requests)  # never downloaded


async def test_attachment_deleted_from_the_cdn(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine):
        await double.post_message("!stylize mosaic", attachments=[Upload("gone.png", PHOTO, "image/png",
                                                                         cdn_status=404)])
        reply = await double.wait_for("message_create")
    assert "could not download" in _clean(reply.content)


async def test_only_discord_hosted_images_are_fetched(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine, allowed_cdn_hosts=("cdn.discordapp.com",)):
        await double.post_message("!stylize mosaic", attachments=[("a.png", PHOTO, "image/png")])
        reply = await double.wait_for("message_create")
    assert "only use images uploaded to Discord" in _clean(reply.content)
    assert double.cdn.requests == []


async def test_slash_misuse_is_answered(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine):
        ix = await double.invoke_slash("stylize", {"preset": "nope"}, attachments={"content": ("a.png", PHOTO)})
        answer = await ix.wait_for("followup_create")
        ix2 = await double.invoke_slash("stylize", {})
        answer2 = await ix2.wait_for("followup_create")
    assert "no preset called `nope`" in _clean(answer.content)
    assert "I need a photo" in _clean(answer2.content)


async def test_help_explains_stylize(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine):
        await double.post_message("!help stylize")
        reply = await double.wait_for("message_create")
    text = reply.content
    for words in ("two images", "preset", "reply", "strength", "size=", "keep-colours", "seed", "Again"):
        assert words in text, words
