"""End-to-end tests of the Discord double: an unmodified discord.py client, defined in each
test, talks to the double over real sockets (gateway websocket, REST, CDN on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from urllib.parse import urlparse

import aiohttp
import pytest

# Import the double before discord: it silences discord.py's import-time audioop DeprecationWarning.
from devtools.discord_double import PERMISSIONS, DiscordDouble, RateLimitPolicy, Upload, running  # isort: skip

import discord  # isort: skip
from discord import app_commands  # isort: skip

pytestmark = pytest.mark.asyncio

MESSAGES = "/channels/{}/messages"


def png(width: int = 3, height: int = 2) -> bytes:
    """A real (tiny) PNG."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    rows = b"".join(
        b"\x00" + b"".join(bytes([x * 40 % 256, y * 80 % 256, 128]) for x in range(width)) for y in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG = png()


def make_client(*, message_content: bool = True) -> discord.Client:
    intents = discord.Intents.default()
    intents.message_content = message_content
    return discord.Client(intents=intents, guild_ready_timeout=0.1)


class TreeBot(discord.Client):
    """A client with slash commands, synced at startup like a real bot."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.1)
        self.tree = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        await self.tree.sync()


def add_ping(bot: discord.Client, errors: list[BaseException] | None = None) -> None:
    @bot.event
    async def on_message(message: discord.Message) -> None:
        if message.author.bot or message.content != "!ping":
            return
        try:
            await message.channel.send("pong")
        except discord.HTTPException as exc:
            if errors is None:
                raise
            errors.append(exc)


def message_requests(double: DiscordDouble):
    return [r for r in double.requests if r.method == "POST" and r.template == MESSAGES]


async def _until(condition) -> None:
    """Poll ``condition`` (callers bound this with ``asyncio.wait_for``)."""
    while not condition():
        await asyncio.sleep(0.01)


# =============================================================================================
# what the issue asks to check
# =============================================================================================
async def test_echo_replies_with_the_uploaded_file(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client()

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if message.author.bot or not message.content.startswith("!echo"):
            return
        attachment = message.attachments[0]
        data = await attachment.read()  # a real download from the double's CDN
        await message.reply(
            message.content.removeprefix("!echo").strip(),
            file=discord.File(io.BytesIO(data), filename=f"echo-{attachment.filename}"),
        )

    async with running(bot, double):
        posted = await double.post_message("!echo hello", attachments=[("cat.png", PNG, "image/png")])
        action = await double.wait_for("message_create")

    assert action.content == "hello"
    [uploaded] = action.files
    assert (uploaded.filename, uploaded.data, uploaded.content_type) == ("echo-cat.png", PNG, "image/png")
    assert (uploaded.width, uploaded.height) == (3, 2)
    assert action.message["message_reference"]["message_id"] == posted["id"]
    assert action.message["type"] == 19  # REPLY
    # The bot fetched the user's attachment from the CDN, and its own upload can be fetched back.
    assert (urlparse(posted["attachments"][0]["url"]).path, 200) in double.cdn.requests
    assert await double.download(action.attachments[0]) == PNG
    # Everything went through discord.py's own HTTP client and gateway socket.
    assert [r.template for r in double.requests] == ["/users/@me", "/oauth2/applications/@me", MESSAGES]
    assert "compress=zlib-stream" in double.gateway.connection_paths[0]
    assert double.bot_messages() == [action.message]


async def test_slash_command_with_attachment_deferred_then_edited_with_a_file(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = TreeBot()

    @bot.tree.command(description="Stylize a photo")
    async def stylize(interaction: discord.Interaction, image: discord.Attachment, steps: int = 10) -> None:
        await interaction.response.defer(thinking=True)
        data = await image.read()
        await interaction.edit_original_response(
            content=f"done: {image.filename}, {steps} steps",
            attachments=[discord.File(io.BytesIO(data), filename="stylized.png")],
        )

    async with running(bot, double):
        sync = await double.wait_for("commands_sync")
        ix = await double.invoke_slash("stylize", {"steps": 3}, attachments={"image": ("photo.png", PNG)})
        deferred = await ix.wait_response()
        edit = await ix.wait_for("interaction_edit")

    assert [c["name"] for c in sync.request["commands"]] == ["stylize"]
    assert deferred.response_type == 5 and deferred.message["flags"] & 128  # LOADING ("thinking")
    assert edit.content == "done: photo.png, 3 steps"
    assert [f.data for f in edit.files] == [PNG] and edit.files[0].filename == "stylized.png"
    final = ix.original_message()
    assert final is not None and final["id"] == deferred.message["id"]
    assert not final["flags"] & 128 and len(final["attachments"]) == 1
    assert double.bot_messages() == [final]
    # the slash-command attachment was served from /ephemeral-attachments/, as on Discord
    assert any(path.startswith("/ephemeral-attachments/") and status == 200 for path, status in double.cdn.requests)


async def test_buttons_update_message_and_ephemeral_reply(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client()

    class Menu(discord.ui.View):
        @discord.ui.button(label="Go", custom_id="go", style=discord.ButtonStyle.primary)
        async def go(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
            await interaction.response.edit_message(content=f"pressed by {interaction.user.name}", view=None)

        @discord.ui.button(label="Info", custom_id="info")
        async def info(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
            await interaction.response.send_message("only you can see this", ephemeral=True)

        @discord.ui.button(label="Later", custom_id="later")
        async def later(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
            await interaction.response.defer()  # type 6: no visible change yet
            await interaction.edit_original_response(content="pick one (checked later)")

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if message.content == "!menu":
            await message.channel.send("pick one", view=Menu())

    async with running(bot, double):
        await double.post_message("!menu")
        menu = await double.wait_for("message_create")
        info = await double.press_button(menu.message, "info")
        info_reply = await info.wait_response()
        later = await double.press_button(menu.message, "later")
        later_edit = await later.wait_for("interaction_edit")
        go = await double.press_button(menu.message, "go")
        go_reply = await go.wait_response()

    buttons = [c for row in menu.message["components"] for c in row["components"]]
    assert [(b["type"], b["custom_id"]) for b in buttons] == [(2, "go"), (2, "info"), (2, "later")]
    assert info_reply.response_type == 4 and info_reply.content == "only you can see this"
    assert info_reply.message["flags"] & 64  # EPHEMERAL
    assert later.response_type == 6 and later_edit.message_id == menu.message_id  # @original = the menu
    assert later_edit.content == "pick one (checked later)"
    assert go_reply.response_type == 7 and go_reply.message["content"] == "pressed by alice"
    assert double.message(menu.message_id)["components"] == []
    with pytest.raises(LookupError):  # the buttons are gone
        await double.press_button(menu.message, "go")


async def test_autocomplete_and_modal(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = TreeBot()
    styles = ["starry night", "the scream", "great wave"]

    class Feedback(discord.ui.Modal, title="Feedback"):
        text = discord.ui.TextInput(label="How was it?", custom_id="feedback")

        async def on_submit(self, interaction: discord.Interaction) -> None:
            await interaction.response.send_message(f"thanks: {self.text.value}")

    @bot.tree.command(description="Pick a style")
    async def style(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_modal(Feedback())

    @style.autocomplete("name")
    async def style_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=s, value=s) for s in styles if current in s]

    async with running(bot, double):
        choices = await double.autocomplete("style", {"name": "s"}, focused="name")
        ix = await double.invoke_slash("style", {"name": choices[0]["value"]})
        modal = await ix.wait_response()
        submitted = await double.submit_modal(ix, {"feedback": "lovely"})
        reply = await submitted.wait_response()

    assert [c["value"] for c in choices] == ["starry night", "the scream"]
    assert modal.response_type == 9 and ix.modal["title"] == "Feedback"
    assert reply.response_type == 4 and reply.content == "thanks: lovely"


async def test_followups_and_guild_commands(discord_double: DiscordDouble) -> None:
    double = discord_double
    guild = discord.Object(id=double.guild.id)

    class GuildBot(TreeBot):
        async def setup_hook(self) -> None:
            await self.tree.sync(guild=guild)

    bot = GuildBot()

    @bot.tree.command(description="Two results", guild=guild)
    async def twice(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        first = await interaction.followup.send("first", file=discord.File(io.BytesIO(b"1"), "1.txt"), wait=True)
        await interaction.followup.send("second (just for you)", ephemeral=True)
        await first.edit(content="first, edited")

    async with running(bot, double):
        ix = await double.invoke_slash("twice")
        first = await ix.wait_for("followup_create")
        second = await ix.wait_for("followup_create")
        edited = await ix.wait_for("interaction_edit")

    assert double.requests[2].template == "/applications/{}/guilds/{}/commands"
    assert ix.payload["data"]["guild_id"] == str(double.guild.id)
    # after a deferred response, the first followup replaces the "thinking" message
    assert first.message_id == ix.original_message_id and not first.message["flags"] & 128
    assert [f.data for f in first.files] == [b"1"]
    assert second.message_id != ix.original_message_id and second.message["flags"] & 64
    assert edited.message_id == first.message_id and edited.content == "first, edited"
    assert [m["content"] for m in double.bot_messages()] == ["first, edited", "second (just for you)"]


async def test_select_menu(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client()

    class SizePicker(discord.ui.View):
        @discord.ui.select(custom_id="size", options=[discord.SelectOption(label=s, value=s) for s in ("256", "512")])
        async def size(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
            await interaction.response.send_message(f"size {select.values[0]}")

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if message.content == "!size":
            await message.channel.send("which size?", view=SizePicker())

    async with running(bot, double):
        await double.post_message("!size")
        picker = await double.wait_for("message_create")
        with pytest.raises(ValueError):
            await double.select(picker.message, "size", ["1024"])
        ix = await double.select(picker.message, "size", ["512"])
        assert (await ix.wait_response()).content == "size 512"


async def test_auto_sharded_client_uses_gateway_bot(discord_double: DiscordDouble) -> None:
    double = discord_double
    intents = discord.Intents.default()
    intents.message_content = True
    bot = discord.AutoShardedClient(intents=intents, guild_ready_timeout=0.1)
    add_ping(bot)
    async with running(bot, double):
        await double.post_message("!ping")
        assert (await double.wait_for("message_create")).content == "pong"
    assert "/gateway/bot" in [r.template for r in double.requests]
    assert double.gateway.ops_received(2)[0]["d"]["shard"] == [0, 1]


# =============================================================================================
# faults
# =============================================================================================
async def test_429_on_message_create_is_waited_out_and_retried(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client()
    add_ping(bot)
    double.fail_next("POST", "/channels/{channel_id}/messages", 429, retry_after=0.3)

    async with running(bot, double):
        await double.post_message("!ping")
        reply = await double.wait_for("message_create")

    assert reply.content == "pong"
    limited, ok = message_requests(double)
    assert (limited.status, ok.status) == (429, 200)
    assert ok.at - limited.at >= 0.3
    assert double.bot_messages()[0]["content"] == "pong"  # sent once


async def test_500_is_retried_by_discord_py(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client()
    add_ping(bot)
    double.fail_next("POST", "/channels/{channel_id}/messages", 500)

    async with running(bot, double):
        await double.post_message("!ping")
        reply = await double.wait_for("message_create", timeout=8)

    assert reply.content == "pong"
    failed, ok = message_requests(double)
    assert (failed.status, ok.status) == (500, 200)
    assert ok.at - failed.at >= 1.0  # discord.py sleeps 1 + 2*tries seconds


async def test_503_surfaces_as_discord_server_error(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client()
    errors: list[BaseException] = []
    add_ping(bot, errors)
    double.fail_next("POST", "/channels/{channel_id}/messages", 503)

    async with running(bot, double):
        await double.post_message("!ping")
        await asyncio.wait_for(_until(lambda: errors), 5)

    [error] = errors
    assert isinstance(error, discord.DiscordServerError) and error.status == 503
    assert double.bot_messages() == []


async def test_gateway_close_4000_resumes_and_replays_missed_events(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client()
    add_ping(bot)
    resumed = asyncio.Event()

    @bot.event
    async def on_resumed() -> None:
        resumed.set()

    async with running(bot, double):
        session_id = next(iter(double.gateway.sessions))
        assert await double.disconnect_gateway(4000) == 1
        await double.post_message("!ping")  # sent while the bot is away: replayed on RESUME
        resume = await double.gateway.wait_for_op(6)
        reply = await double.wait_for("message_create", timeout=8)
        await asyncio.wait_for(resumed.wait(), 5)

    assert reply.content == "pong"
    assert resume["d"]["session_id"] == session_id and resume["d"]["token"] == double.token
    assert len(double.gateway.ops_received(2)) == 1  # resumed, not re-identified
    assert double.gateway.close_codes[0] == 4000
    assert double.gateway.connection_paths[1].startswith("/gateway-resume?")  # READY's resume_gateway_url


async def test_reconnect_opcode_resumes(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client()
    add_ping(bot)
    async with running(bot, double):
        await double.request_reconnect()
        await double.gateway.wait_for_op(6)
        await double.post_message("!ping")
        assert (await double.wait_for("message_create", timeout=8)).content == "pong"
    assert len(double.gateway.ops_received(2)) == 1


async def test_rate_limit_headers_make_discord_py_pace_itself(discord_double_factory) -> None:
    double = await discord_double_factory(rate_limit=RateLimitPolicy(limit=2, window=0.3))
    bot = make_client()

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if message.content == "!spam":
            for i in range(5):
                await message.channel.send(str(i))

    async with running(bot, double):
        await double.post_message("!spam")
        for _ in range(5):
            await double.wait_for("message_create")

    sent = message_requests(double)
    assert [r.status for r in sent] == [200] * 5  # no 429: discord.py read the headers and waited
    assert sent[-1].at - sent[0].at >= 0.5  # two full windows of waiting
    assert [m["content"] for m in double.bot_messages()] == ["0", "1", "2", "3", "4"]


async def test_invalid_session_makes_the_bot_identify_again(discord_double: DiscordDouble) -> None:
    """Slow on purpose: discord.py waits 5 s (``before_identify_hook``) before re-IDENTIFYing."""
    double = discord_double
    bot = make_client()
    add_ping(bot)
    async with running(bot, double):
        await double.invalidate_session(resumable=False)
        await double.gateway.wait_for_op(2, count=2, timeout=9)
        await double.post_message("!ping")
        assert (await double.wait_for("message_create")).content == "pong"
    assert len(double.gateway.sessions) == 2


async def test_attachment_that_404s_raises_not_found(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client()

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if message.author.bot:
            return
        try:
            await message.attachments[0].read()
        except discord.NotFound as exc:
            await message.channel.send(f"could not download: {exc.status}")

    async with running(bot, double):
        await double.post_message("!echo", attachments=[Upload("gone.png", PNG, "image/png", cdn_status=404)])
        reply = await double.wait_for("message_create")

    assert reply.content == "could not download: 404"


@pytest.mark.parametrize("case", ["created_16_minutes_ago", "answered_after_3_seconds"])
async def test_late_interaction_callback_is_unknown_interaction(discord_double: DiscordDouble, case: str) -> None:
    double = discord_double
    bot = TreeBot()
    errors: list[BaseException] = []
    if case == "answered_after_3_seconds":
        double.initial_response_timeout = 0.2  # Discord's 3 s, shortened to keep the test fast

    @bot.tree.command(description="Ping")
    async def ping(interaction: discord.Interaction) -> None:
        if case == "answered_after_3_seconds":
            await asyncio.sleep(0.4)
        try:
            await interaction.response.send_message("pong")
        except discord.HTTPException as exc:
            errors.append(exc)

    async with running(bot, double):
        created_at = time.time() - 16 * 60 if case == "created_16_minutes_ago" else None
        await double.invoke_slash("ping", created_at=created_at)
        await asyncio.wait_for(_until(lambda: errors), 5)

    [error] = errors
    assert isinstance(error, discord.NotFound) and (error.status, error.code) == (404, 10062)
    assert double.bot_messages() == []


async def test_interaction_token_expires_after_15_minutes(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = TreeBot()
    later = asyncio.Event()
    errors: list[BaseException] = []

    @bot.tree.command(description="Slow job")
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await later.wait()
        try:
            await interaction.edit_original_response(content="finally")
        except discord.HTTPException as exc:
            errors.append(exc)

    async with running(bot, double):
        ix = await double.invoke_slash("slow")
        await ix.wait_response()
        double.advance_clock(15 * 60 + 1)
        later.set()
        await asyncio.wait_for(_until(lambda: errors), 5)

    [error] = errors
    assert (error.status, error.code) == (401, 50027)  # Invalid Webhook Token
    assert ix.original_message()["flags"] & 128  # still "thinking..."


async def test_heartbeats_are_acknowledged(discord_double_factory) -> None:
    double = await discord_double_factory(heartbeat_interval_ms=100)
    bot = make_client()
    async with running(bot, double):
        await double.gateway.wait_for_op(1, count=4)
        await asyncio.wait_for(_until(lambda: bot.latency < 1.0), 5)


# =============================================================================================
# realism the bot's tests will lean on
# =============================================================================================
async def test_typing_reactions_edit_with_files_and_delete(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client()

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if message.content != "!work":
            return
        async with message.channel.typing():
            status = await message.channel.send("working...")
        await status.add_reaction("⏳")
        status = await status.edit(content="step 1", attachments=[discord.File(io.BytesIO(b"one"), "1.txt")])
        status = await status.edit(
            content="step 2", attachments=[*status.attachments, discord.File(io.BytesIO(b"two"), "2.txt")]
        )
        await status.remove_reaction("⏳", bot.user)
        temp = await message.channel.send("temporary")
        assert (await message.channel.fetch_message(temp.id)).content == "temporary"
        await temp.delete()

    async with running(bot, double):
        await double.post_message("!work")
        await double.wait_for("message_delete")

    kinds = [a.kind for a in double.actions]
    assert kinds == [
        "typing",
        "message_create",
        "reaction_add",
        "message_edit",
        "message_edit",
        "reaction_remove",
        "message_create",
        "message_delete",
    ]
    [status] = double.bot_messages()
    assert status["content"] == "step 2" and status["edited_timestamp"]
    assert [a["filename"] for a in status["attachments"]] == ["1.txt", "2.txt"]
    assert [await double.download(a) for a in status["attachments"]] == [b"one", b"two"]
    assert "reactions" not in status or status["reactions"] == []


async def test_user_replies_and_reactions_reach_the_bot(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client()
    seen: list[str] = []

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if message.content == "!vote":
            await message.channel.send("vote with a reaction")
        elif message.reference is not None:
            seen.append(f"reply to {message.reference.message_id}")

    @bot.event
    async def on_raw_reaction_add(payload: discord.RawReactionActionEvent) -> None:
        seen.append(f"{payload.emoji} by {payload.user_id} on {payload.message_id}")

    async with running(bot, double):
        await double.post_message("!vote")
        poll = await double.wait_for("message_create")
        await double.add_reaction(poll.message, "👍")
        await double.post_message("me too", reference=poll.message)
        await asyncio.wait_for(_until(lambda: len(seen) == 2), 5)

    assert seen == [f"👍 by {double.user.id} on {poll.message_id}", f"reply to {poll.message_id}"]
    assert double.message(poll.message_id)["reactions"][0]["count"] == 1


async def test_without_message_content_intent_content_arrives_empty(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client(message_content=False)
    seen: list[str] = []

    @bot.event
    async def on_message(message: discord.Message) -> None:
        seen.append(message.content)

    async with running(bot, double):
        await double.post_message("hello")
        await double.post_message(f"{double.bot_user.mention} hi")
        await asyncio.wait_for(_until(lambda: len(seen) == 2), 5)

    assert seen == ["", f"{double.bot_user.mention} hi"]


async def test_dm_conversation(discord_double: DiscordDouble) -> None:
    double = discord_double
    bot = make_client()
    add_ping(bot)
    dm = double.dm_channel(double.user)
    async with running(bot, double):
        await double.post_message("!ping", channel=dm)
        reply = await double.wait_for("message_create", channel=dm)
    assert reply.content == "pong" and double.bot_messages(dm)[0]["channel_id"] == str(dm.id)


async def test_missing_permission_and_upload_limit(discord_double_factory) -> None:
    double = await discord_double_factory(upload_limit=1024)
    art = double.add_channel("art")
    double.set_bot_permissions(art, deny=PERMISSIONS["ATTACH_FILES"])
    bot = make_client()
    errors: list[BaseException] = []

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if message.author.bot:
            return
        try:
            await message.channel.send(file=discord.File(io.BytesIO(b"x" * int(message.content)), "big.bin"))
        except discord.HTTPException as exc:
            errors.append(exc)

    async with running(bot, double):
        await double.post_message("10", channel=art)
        await double.post_message("2048")
        await asyncio.wait_for(_until(lambda: len(errors) == 2), 5)

    forbidden, too_large = errors
    assert isinstance(forbidden, discord.Forbidden) and forbidden.code == 50013
    assert (too_large.status, too_large.code) == (413, 40005)


async def test_privileged_intent_not_enabled_is_refused(discord_double_factory) -> None:
    double = await discord_double_factory(privileged_intents=0)
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with running(make_client(message_content=True), double):
            pass
    assert double.gateway.close_codes == [4014]


async def test_bad_token_is_a_login_failure(discord_double: DiscordDouble) -> None:
    bot = make_client()
    try:
        with pytest.raises(discord.LoginFailure):
            await asyncio.wait_for(bot.start("not-the-token"), 5)
    finally:
        await bot.close()
    assert discord_double.requests[0].status == 401


async def test_rest_responses_have_discords_http_shape(discord_double: DiscordDouble) -> None:
    double = discord_double
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{double.api_base}/users/@me") as resp:
            assert resp.status == 401 and await resp.json() == {"message": "401: Unauthorized", "code": 0}
        auth = {"Authorization": f"Bot {double.token}"}
        async with http.get(f"{double.api_base}/users/@me", headers=auth) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"  # exactly
            assert resp.headers["Via"] and resp.headers["X-RateLimit-Bucket"]
            assert (await resp.json())["bot"] is True
        async with http.get(f"{double.api_base}/no/such/route", headers=auth) as resp:
            assert resp.status == 404
    assert double.unhandled_requests == ["GET /api/v10/no/such/route"]
    double.unhandled_requests.clear()  # otherwise the fixture fails the test, as it should


async def test_snowflakes_encode_the_current_time(discord_double: DiscordDouble) -> None:
    msg = await discord_double.post_message("hi")
    created = discord.utils.snowflake_time(int(msg["id"]))
    assert abs((discord.utils.utcnow() - created).total_seconds()) < 2
