"""`!stylize` and `/stylize` end to end: the real bot, the Discord double, the engine service over HTTP."""
from __future__ import annotations

import re

import pytest

from tests.bot.support import PAINTING, PHOTO, buttons, decode, final_of, job_id_of, png, settled  # isort: skip
from devtools.discord_double import DiscordDouble  # isort: skip

pytestmark = pytest.mark.asyncio

JOB_BUTTONS = re.compile(r"^nst:(again|stronger|weaker|colours):([0-9a-f]{12})$")


async def test_prefix_two_attachments_with_the_real_model(harness, engine_factory, discord_double: DiscordDouble):
    double = discord_double
    engine = await engine_factory(fake=False)
    async with harness.run(engine, preview_interval=0.01) as bot:
        posted = await double.post_message("!stylize", attachments=[("photo.png", PHOTO, "image/png"),
                                                                    ("painting.png", PAINTING, "image/png")])
        status = await double.wait_for("message_create")
        final = await final_of(double, status.message_id, timeout=60)
        job_id = job_id_of(status.content)
        record = await settled(bot, job_id)

    # At once: a reply, saying it is queued, with a Cancel button.
    assert status.message["message_reference"]["message_id"] == posted["id"]
    assert "queued" in status.content
    assert buttons(status.message) == [f"nst:cancel:{job_id}"]
    # Then edits of that message: progress with a bar and a percentage, and a preview image.
    edits = [a for a in double.actions_of("message_edit") if a.message_id == status.message_id]
    assert any("%" in (a.content or "") and "▰" in (a.content or "") for a in edits), [a.content for a in edits]
    assert any(f.filename == "preview.jpg" for a in edits for f in a.files)
    # The result: a decodable image of the requested size (long side 32), settings, and the four buttons.
    assert "done" in final["content"] and "32 px" in final["content"]
    [attachment] = final["attachments"]
    image = decode(await double.download(attachment))
    assert image.size == (32, 21)
    assert [JOB_BUTTONS.match(b).group(1) for b in buttons(final)] == ["again", "stronger", "weaker", "colours"]
    assert all(b.endswith(job_id) for b in buttons(final))
    assert record.state == "done" and record.user_id == double.user.id


async def test_slash_with_attachments(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine):
        ix = await double.invoke_slash("stylize", {"strength": "strong", "keep_colours": True, "seed": 7},
                                       attachments={"content": ("photo.png", PHOTO), "style": ("art.png", PAINTING)})
        deferred = await ix.wait_response()
        status = await ix.wait_for("followup_create")
        final = await final_of(double, status.message_id)

    assert deferred.response_type == 5  # deferred within 3 s
    assert "queued" in status.content
    assert "strength: strong" in final["content"] and "colours kept" in final["content"]
    assert "seed 7" in final["content"]
    assert decode(await double.download(final["attachments"][0])).size == (32, 21)
    [call] = engine.fake.calls
    assert call["strength"] == 6.0 and call["preserve_colors"] and call["seed"] == 7


async def test_prefix_with_a_preset_name_and_options(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine):
        await double.post_message("!stylize Mosaic subtle size=48", attachments=[("p.jpg", PHOTO, "image/png")])
        status = await double.wait_for("message_create")
        final = await final_of(double, status.message_id)

    assert "preset mosaic" in final["content"] and "strength: subtle" in final["content"]
    assert decode(await double.download(final["attachments"][0])).size == (48, 32)
    [call] = engine.fake.calls
    assert call["style_keys"] and call["strength"] == 3.0


async def test_slash_with_a_preset_and_autocomplete(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine):
        choices = await double.autocomplete("stylize", {"preset": "mo"}, focused="preset")
        ix = await double.invoke_slash("stylize", {"preset": "mosaic"}, attachments={"content": ("p.png", PHOTO)})
        status = await ix.wait_for("followup_create")
        final = await final_of(double, status.message_id)

    assert [c["value"] for c in choices] == ["mosaic"]
    assert "preset mosaic" in final["content"] and final["attachments"]


async def test_reply_to_a_message_with_an_image(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine):
        original = await double.post_message("look at my cat", author=double.owner,
                                             attachments=[("cat.png", png(40, 40), "image/png")])
        await double.post_message("!stylize swirls", reference=original)
        status = await double.wait_for("message_create")
        final = await final_of(double, status.message_id)
        # Two images in the replied-to message: photo and style.
        both = await double.post_message("", author=double.owner, attachments=[
            ("a.png", PHOTO, "image/png"), ("b.png", PAINTING, "image/png")])
        await double.post_message("!stylize", reference=both)
        status2 = await double.wait_for("message_create")
        final2 = await final_of(double, status2.message_id)

    assert decode(await double.download(final["attachments"][0])).size == (32, 32)  # the cat, square
    assert "preset swirls" in final["content"]
    assert decode(await double.download(final2["attachments"][0])).size == (32, 21)
    assert "style: your image" in final2["content"]


async def test_context_menus_use_as_style_and_stylize_with(harness, engine, discord_double: DiscordDouble):

    double = discord_double
    async with harness.run(engine):
        art = await double.post_message("my painting", author=double.owner,
                                        attachments=[("art.png", PAINTING, "image/png")])
        saved = await double.invoke_message_command("Use as style", art)
        assert (await saved.wait_response()).response_type == 5
        saved_reply = await saved.wait_for("followup_create")
        ix = await double.invoke_slash("stylize", attachments={"content": ("p.png", PHOTO)})
        status = await ix.wait_for("followup_create")
        final = await final_of(double, status.message_id)

        photo = await double.post_message("a photo", attachments=[("p.png", png(40, 30), "image/png")])
        menu = await double.invoke_message_command("Stylize with…", photo)
        picker = await menu.wait_response()
        picked = await double.select(picker.message, "nst:pick-preset", ["swirls"])
        await picked.wait_response()
        status2 = await double.wait_for("message_create", lambda a: "Job" in (a.content or ""))
        final2 = await final_of(double, status2.message_id)

    assert "Saved `art.png` as your style" in saved_reply.content
    assert "style: your saved style" in final["content"] and final["attachments"]
    assert picker.message["flags"] & 64 and "swirls" in [o["value"] for o in
                                                         picker.message["components"][0]["components"][0]["options"]]
    assert status2.message["message_reference"]["message_id"] == photo["id"]
    assert "preset swirls" in final2["content"]
    assert decode(await double.download(final2["attachments"][0])).size == (32, 24)
