"""Presets (listing with a contact sheet, admin add/remove) and per-guild limits set by admins."""
from __future__ import annotations

import pytest

from tests.bot.support import PAINTING, PHOTO, decode, final_of, job_id_of, settled  # isort: skip
from devtools.discord_double import DiscordDouble  # isort: skip

pytestmark = pytest.mark.asyncio


async def test_presets_lists_names_with_a_contact_sheet(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine):
        await double.post_message("!presets")
        reply = await double.wait_for("message_create")
        ix = await double.invoke_slash("presets")
        slash = await ix.wait_for("followup_create")
    for name in ("mosaic", "swirls", "brushstrokes"):
        assert f"`{name}`" in reply.content and f"`{name}`" in slash.content
    sheet = decode(await double.download(reply.attachments[0]))
    assert sheet.format == "PNG" and sheet.width > 128 and sheet.height > 128


async def test_admin_adds_uses_and_removes_a_guild_preset(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine) as bot:
        await double.post_message("!preset add Stripes", author=double.owner,
                                  attachments=[("stripes.png", PAINTING, "image/png")])
        added = await double.wait_for("message_create")
        await double.post_message("!presets")
        listing = await double.wait_for("message_create")
        await double.post_message("!stylize stripes", attachments=[("p.png", PHOTO, "image/png")])
        status = await double.wait_for("message_create")
        final = await final_of(double, status.message_id)
        record = await settled(bot, job_id_of(final["content"]))
        await double.post_message("!preset remove stripes", author=double.owner)
        removed = await double.wait_for("message_create")
        await double.post_message("!stylize stripes", attachments=[("p.png", PHOTO, "image/png")])
        unknown = await double.wait_for("message_create")
    assert "Added the preset `stripes`" in added.content
    assert "This server: `stripes`" in listing.content
    assert "preset stripes" in final["content"] and record.params.preset is None  # sent as the style image
    assert engine.fake.calls[0]["style_keys"] == [None]
    assert "Removed the preset `stripes`" in removed.content
    assert "There is no preset called `stripes`" in unknown.content


async def test_preset_admin_commands_need_manage_server(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine):
        await double.post_message("!preset add mine", attachments=[("s.png", PAINTING, "image/png")])
        refused = await double.wait_for("message_create")
        await double.post_message("!preset add Bad/Name", author=double.owner,
                                  attachments=[("s.png", PAINTING, "image/png")])
        bad_name = await double.wait_for("message_create")
        await double.post_message("!preset add nofile", author=double.owner)
        no_file = await double.wait_for("message_create")
        await double.post_message("!preset remove mosaic", author=double.owner)
        builtin = await double.wait_for("message_create")
    assert "Manage Server" in refused.content
    assert "not a valid preset name" in bad_name.content
    assert "Usage: `!preset add NAME`" in no_file.content
    assert "global preset" in builtin.content


async def test_admin_sets_limits_and_channels(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    art = double.add_channel("art")
    async with harness.run(engine):
        await double.post_message("!config set max_size 48", author=double.owner)
        set_size = await double.wait_for("message_create")
        await double.post_message("!config set queue_cap zero", author=double.owner)
        bad_value = await double.wait_for("message_create")
        await double.post_message("!config set cooldown 5")
        not_admin = await double.wait_for("message_create")
        await double.post_message(f"!config allow <#{art.id}>", author=double.owner)
        allowed = await double.wait_for("message_create")
        await double.post_message("!stylize mosaic size=64", attachments=[("p.png", PHOTO, "image/png")])
        wrong_channel = await double.wait_for("message_create")
        await double.post_message("!stylize mosaic size=64", channel=art, attachments=[("p.png", PHOTO, "image/png")])
        status = await double.wait_for("message_create")
        final = await final_of(double, status.message_id)
        await double.post_message("!config show", author=double.owner)
        shown = await double.wait_for("message_create")
    assert "`max_size` is now 48" in set_size.content
    assert "must be a number" in bad_value.content
    assert "Manage Server" in not_admin.content
    assert f"<#{art.id}>" in allowed.content
    assert f"I only stylize in <#{art.id}>" in wrong_channel.content
    assert "48 px" in final["content"]  # capped by the server's max_size
    assert decode(await double.download(final["attachments"][0])).size == (48, 32)
    assert "48 px" in shown.content and f"<#{art.id}>" in shown.content


async def test_owner_sync_command(harness, engine, discord_double: DiscordDouble):
    double = discord_double
    async with harness.run(engine):
        await double.post_message("!sync guild", author=double.owner)
        reply = await double.wait_for("message_create")
        await double.post_message("!sync")
        refused = await double.wait_for("message_create")
    assert reply.content.startswith("Synced") and "Only the bot's owner" in refused.content


async def test_health_file_is_touched_while_connected(harness, engine, discord_double: DiscordDouble, tmp_path):
    health = tmp_path / "alive"
    async with harness.run(engine, health_file=health):
        from tests.bot.support import until

        await until(health.exists, timeout=5)
