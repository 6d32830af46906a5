"""``DiscordDouble``: the server (gateway + REST + CDN on 127.0.0.1) and the test API.

The test API plays the human side: post messages (with attachments), invoke slash commands,
press buttons, pick autocomplete values, submit modals, and reads back what the bot did.
"""

from __future__ import annotations

import base64
import copy
import datetime
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Self

import aiohttp
from aiohttp import web

from . import events, interactions, rest, rest_interactions  # noqa: F401  (rest_interactions registers routes)
from .cdn import CDN
from .gateway import INVALID_SESSION, PRIVILEGED_INTENTS, RECONNECT, Gateway
from .messages import MessageBuilder
from .ratelimits import Buckets, Fault, Faults, RateLimitPolicy
from .snowflakes import Clock, SnowflakeFactory
from .state import (
    DEFAULT_PERMISSIONS,
    Action,
    Channel,
    Guild,
    InteractionHandle,
    Member,
    Role,
    Store,
    StoredFile,
    User,
)

# Application flags for the privileged intents an app has switched on (unverified app).
# https://discord.com/developers/docs/resources/application#application-object-application-flags
_INTENT_FLAGS = {1 << 8: 1 << 13, 1 << 1: 1 << 15, 1 << 15: 1 << 19}
_APPLICATION_COMMAND_FLAG = 1 << 23


DEFAULT_RATE_LIMIT = RateLimitPolicy()  # 5 requests per route per second; None disables the headers


class Upload(NamedTuple):
    """A file a test user attaches. Plain tuples ``(filename, data[, content_type])`` work too."""

    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None
    cdn_status: int = 200  # e.g. 404: the CDN will not serve it (an expired/deleted attachment)


MessageRef = dict[str, Any] | int | Action


class DiscordDouble:
    """A local Discord: ``await start()``, point discord.py at it (see ``hooks.py``), run a bot.

    Defaults: one guild ("Test Guild") with a text channel ``#general``; users ``owner`` (guild
    and application owner) and ``alice`` (``double.user``, a plain member); the bot user
    (``double.bot_user``) whose application id equals its user id.
    """

    def __init__(
        self,
        *,
        heartbeat_interval_ms: int = 41_250,
        rate_limit: RateLimitPolicy | None = DEFAULT_RATE_LIMIT,
        privileged_intents: int = PRIVILEGED_INTENTS,
        initial_response_timeout: float = 3.0,
        interaction_token_lifetime: float = 15 * 60,
        upload_limit: int = 10 * 1024 * 1024,
        require_synced_commands: bool = True,
        bot_name: str = "NST Bot",
    ) -> None:
        self.clock = Clock()
        self.snowflakes = SnowflakeFactory(self.clock)
        self.store = Store(self.clock, self.snowflakes)
        self.privileged_intents = privileged_intents
        self.initial_response_timeout = initial_response_timeout
        self.interaction_token_lifetime = interaction_token_lifetime
        self.upload_limit = upload_limit
        self.require_synced_commands = require_synced_commands
        self.cdn = CDN(self)
        self.gateway = Gateway(self, heartbeat_interval_ms=heartbeat_interval_ms)
        self.builder = MessageBuilder(self)
        self.buckets = Buckets(self.clock, rate_limit)
        self.faults = Faults()
        self.requests: list[rest.RequestRecord] = []  # every REST request, in order
        self.internal_errors: list[str] = []  # bugs in the double (tracebacks)
        self.unhandled_requests: list[str] = []  # REST routes the bot called that the double lacks

        made_long_ago = self.clock.now() - 400 * 86400
        self.bot_user = self._new_user(bot_name, bot=True, at=made_long_ago)
        self.application_id = self.bot_user.id
        self.owner = self._new_user("owner", at=made_long_ago)
        self.user = self._new_user("alice", at=made_long_ago)
        self.token = self._make_token()
        self.application_flags = _APPLICATION_COMMAND_FLAG | sum(
            flag for intent, flag in _INTENT_FLAGS.items() if privileged_intents & intent
        )

        gid = self.snowflakes.make(made_long_ago)
        self.joined_at = self.clock.now() - 86400
        self.guild = Guild(id=gid, name="Test Guild", owner_id=self.owner.id)
        bot_role = Role(
            id=self.snowflakes.make(made_long_ago),
            name=bot_name,
            permissions=DEFAULT_PERMISSIONS,
            position=1,
            managed=True,
            bot_id=self.bot_user.id,
        )
        self.guild.roles = [Role(id=gid, name="@everyone", permissions=DEFAULT_PERMISSIONS), bot_role]
        for u in (self.owner, self.user):
            self.guild.members[u.id] = Member(user=u, roles=[], joined_at=made_long_ago)
        self.guild.members[self.bot_user.id] = Member(user=self.bot_user, roles=[bot_role.id], joined_at=self.joined_at)
        self.store.guilds[gid] = self.guild
        self.channel = self.add_channel("general")

        self.host = "127.0.0.1"
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    # =========================================================================================
    # lifecycle
    # =========================================================================================
    async def start(self, port: int = 0) -> Self:
        app = web.Application(middlewares=[rest.api_middleware], client_max_size=self.upload_limit * 11)
        app[rest.DOUBLE] = self
        app.add_routes(rest.routes)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway-resume", self.gateway.handle)
        self.cdn.add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        await self.gateway.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (CDN files live right under it)."""
        if self.port is None:
            raise RuntimeError("DiscordDouble is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway-resume"

    async def wait_until_connected(self, timeout: float = 10.0, *, count: int = 1) -> None:
        """Until ``count`` sessions in total have IDENTIFYed and received READY + GUILD_CREATEs."""
        await self.gateway.wait_until(lambda: self.gateway.identified >= count, timeout)

    def problems(self) -> list[str]:
        """Bugs in the double and routes it lacks; the pytest fixture fails the test on these."""
        return [*self.internal_errors, *(f"unhandled REST route: {r}" for r in self.unhandled_requests)]

    # =========================================================================================
    # setup: users, channels, permissions, commands (before the bot connects)
    # =========================================================================================
    def _new_user(self, username: str, *, bot: bool = False, at: float | None = None) -> User:
        user = User(
            id=self.snowflakes.make(at), username=username, bot=bot, global_name=None if bot else username.title()
        )
        self.store.users[user.id] = user
        return user

    def _make_token(self) -> str:
        """Shaped like a real bot token: base64(user id).base64(timestamp).hmac."""

        def b64(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).decode().rstrip("=")

        return f"{b64(str(self.bot_user.id).encode())}.{b64(secrets.token_bytes(4))}.{secrets.token_urlsafe(27)}"

    def _setup_only(self) -> None:
        if self.gateway.sessions:
            raise RuntimeError("add users and channels before the bot connects (no *_CREATE events are sent)")

    def add_user(self, username: str, *, bot: bool = False, member: bool = True) -> User:
        self._setup_only()
        user = self._new_user(username, bot=bot)
        if member:
            self.guild.members[user.id] = Member(user=user, roles=[], joined_at=self.clock.now())
        return user

    def add_channel(self, name: str) -> Channel:
        self._setup_only()
        channel = Channel(
            id=self.snowflakes.make(), name=name, type=0, guild_id=self.guild.id, position=len(self.guild.channels)
        )
        self.guild.channels.append(channel)
        return channel

    def dm_channel(self, user: User) -> Channel:
        """The DM channel between ``user`` and the bot (created on first use)."""
        for ch in self.store.dm_channels.values():
            if any(r.id == user.id for r in ch.recipients):
                return ch
        channel = Channel(id=self.snowflakes.make(), name=None, type=1, recipients=[user])
        self.store.dm_channels[channel.id] = channel
        return channel

    def set_bot_permissions(self, channel: Channel, *, allow: int = 0, deny: int = 0) -> None:
        """A channel permission overwrite for the bot's member, e.g.
        ``deny=PERMISSIONS["ATTACH_FILES"]`` to get 403 50013 Missing Permissions on uploads."""
        self._setup_only()
        channel.overwrites = [o for o in channel.overwrites if o["id"] != str(self.bot_user.id)]
        channel.overwrites.append({"id": str(self.bot_user.id), "type": 1, "allow": str(allow), "deny": str(deny)})

    def register_command(self, command: dict[str, Any], *, guild: bool = False) -> dict[str, Any]:
        """Pretend a command was synced by an earlier run (Discord keeps commands across restarts)."""
        cmd = rest._normalise_command(self, self.guild.id if guild else None, command, None)
        key = self.guild.id if guild else None
        self.store.commands[key] = [c for c in self.store.commands.get(key, []) if c["name"] != cmd["name"]] + [cmd]
        return cmd

    def advance_clock(self, seconds: float) -> None:
        """Move the double's time forward, e.g. 15 minutes to expire interaction tokens."""
        self.clock.advance(seconds)

    # =========================================================================================
    # the human side
    # =========================================================================================
    def upload_files(
        self, channel: Channel, attachments: Iterable[Any], *, ephemeral: bool = False
    ) -> list[StoredFile]:
        """Put files a test user attaches on the CDN."""
        files = []
        for item in attachments:
            up = item if isinstance(item, Upload) else Upload(*item)
            stored = self.cdn.put(
                channel_id=channel.id,
                filename=up.filename,
                data=up.data,
                content_type=up.content_type,
                description=up.description,
                ephemeral=ephemeral,
            )
            stored.cdn_status = up.cdn_status
            files.append(stored)
        return files

    async def post_message(
        self,
        content: str = "",
        *,
        author: User | None = None,
        channel: Channel | None = None,
        attachments: Sequence[Upload | tuple] = (),
        reference: MessageRef | None = None,
        embeds: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A user posts a message (dispatched as MESSAGE_CREATE). Returns the message object."""
        author = author or self.user
        channel = channel or self.channel
        files = self.upload_files(channel, attachments)
        ref = None
        if reference is not None:
            ref_msg = self._message(reference)
            ref = {"message_id": ref_msg["id"], "channel_id": ref_msg["channel_id"]}
        msg = self.builder.create(
            channel=channel,
            author=author,
            content=content,
            files=files,
            body={"content": content, "embeds": embeds or []},
            reference=ref,
        )
        await events.message_create(self, msg, channel)
        return copy.deepcopy(msg)

    async def add_reaction(self, message: MessageRef, emoji: str, *, user: User | None = None) -> None:
        """A user reacts with a unicode emoji (MESSAGE_REACTION_ADD)."""
        user = user or self.user
        msg = self._message(message)
        channel = self.store.channel(int(msg["channel_id"]))
        assert channel is not None
        reactions = msg.setdefault("reactions", [])
        entry = next((r for r in reactions if r["emoji"] == {"id": None, "name": emoji}), None)
        if entry is None:
            entry = {
                "count": 0,
                "count_details": {"burst": 0, "normal": 0},
                "me": False,
                "me_burst": False,
                "burst_colors": [],
                "emoji": {"id": None, "name": emoji},
            }
            reactions.append(entry)
        entry["count"] += 1
        entry["count_details"]["normal"] += 1
        await events.reaction(self, "MESSAGE_REACTION_ADD", user.id, msg, channel, {"id": None, "name": emoji})

    # -- interactions ---------------------------------------------------------------------
    async def invoke_slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        attachments: dict[str, Upload | tuple] | None = None,
        user: User | None = None,
        channel: Channel | None = None,
        created_at: float | datetime.datetime | None = None,
    ) -> InteractionHandle:
        """A user runs ``/name`` (INTERACTION_CREATE type 2). Attachment options can be given in
        ``options`` or ``attachments`` as ``(filename, bytes[, content_type])``. ``created_at``
        (unix seconds) backdates the interaction, e.g. 16 minutes ago to get an expired one."""
        channel = channel or self.channel
        data = interactions.command_data(self, name, {**(options or {}), **(attachments or {})}, channel)
        ix = interactions.new_interaction(self, 2, data, user=user or self.user, channel=channel, created_at=created_at)
        await events.interaction_create(self, ix.payload)
        return ix

    async def invoke_message_command(
        self, name: str, message: dict[str, Any], *, user: User | None = None
    ) -> InteractionHandle:
        """A user runs the message context menu ``name`` on ``message`` (INTERACTION_CREATE type 2
        with ``data.type`` 3, ``target_id`` and ``resolved.messages``)."""
        target = self.message(message["id"])
        channel = self.store.channel(int(target["channel_id"]))
        command = interactions.find_command(self, name, channel, ctype=3)
        data = {"id": command["id"], "name": name, "type": 3, "target_id": target["id"],
                "resolved": {"messages": {target["id"]: target}}}
        if channel.guild_id:
            data["guild_id"] = str(channel.guild_id)
        ix = interactions.new_interaction(self, 2, data, user=user or self.user, channel=channel)
        await events.interaction_create(self, ix.payload)
        return ix

    async def autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        *,
        focused: str,
        user: User | None = None,
        channel: Channel | None = None,
        timeout: float = 5.0,
    ) -> list[dict[str, Any]]:
        """The user types into option ``focused`` (INTERACTION_CREATE type 4); returns the
        choices the bot answered with (callback type 8)."""
        channel = channel or self.channel
        data = interactions.command_data(self, name, options, channel, focused=focused)
        ix = interactions.new_interaction(self, 4, data, user=user or self.user, channel=channel)
        await events.interaction_create(self, ix.payload)
        await ix.wait_response(timeout)
        return list(ix.choices or [])

    async def press_button(
        self,
        message: MessageRef,
        custom_id: str,
        *,
        user: User | None = None,
        created_at: float | datetime.datetime | None = None,
    ) -> InteractionHandle:
        """A user clicks the button ``custom_id`` on ``message`` (INTERACTION_CREATE type 3)."""
        msg = self._message(message)
        comp = interactions.find_component(msg, custom_id)
        if comp["type"] != 2:
            raise TypeError(f"component {custom_id!r} is not a button (type {comp['type']})")
        return await self._component_interaction(
            msg, {"custom_id": custom_id, "component_type": 2, "id": comp.get("id")}, user=user, created_at=created_at
        )

    async def select(
        self, message: MessageRef, custom_id: str, values: list[Any], *, user: User | None = None
    ) -> InteractionHandle:
        """A user picks ``values`` in a select menu (string selects: option values; user selects: Users)."""
        msg = self._message(message)
        comp = interactions.find_component(msg, custom_id)
        ctype = comp["type"]
        if ctype not in (3, 5, 6, 7, 8):
            raise TypeError(f"component {custom_id!r} is not a select menu (type {ctype})")
        if not comp.get("min_values", 1) <= len(values) <= comp.get("max_values", 1):
            raise ValueError(
                f"select {custom_id!r} takes {comp.get('min_values', 1)}..{comp.get('max_values', 1)} values"
            )
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": ctype, "id": comp.get("id")}
        if ctype == 3:
            allowed = {o["value"] for o in comp.get("options", [])}
            if not set(values) <= allowed:
                raise ValueError(f"{values} not among the options {sorted(allowed)}")
            data["values"] = list(values)
        else:
            data["values"] = [str(v.id) for v in values]
            data["resolved"] = {"users": {str(v.id): v.to_payload() for v in values if isinstance(v, User)}}
        return await self._component_interaction(msg, data, user=user)

    async def _component_interaction(
        self,
        msg: dict[str, Any],
        data: dict[str, Any],
        *,
        user: User | None,
        created_at: float | datetime.datetime | None = None,
    ) -> InteractionHandle:
        channel = self.store.channel(int(msg["channel_id"]))
        assert channel is not None
        ix = interactions.new_interaction(
            self, 3, data, user=user or self.user, channel=channel, message=msg, created_at=created_at
        )
        await events.interaction_create(self, ix.payload)
        return ix

    async def submit_modal(
        self, interaction: InteractionHandle, values: dict[str, Any], *, user: User | None = None
    ) -> InteractionHandle:
        """The user fills in the modal the bot opened for ``interaction`` (callback type 9) and
        submits it (INTERACTION_CREATE type 5). ``values`` maps text-input custom_id -> text."""
        modal = interaction.modal
        if modal is None:
            raise ValueError("the bot did not answer this interaction with a modal (callback type 9)")

        data = {
            "custom_id": modal["custom_id"],
            "components": interactions.modal_components(modal["components"], values),
        }
        channel = self.store.channel(interaction.channel_id)
        assert channel is not None
        origin = self.store.messages.get(interaction.message_id or 0)
        ix = interactions.new_interaction(self, 5, data, user=user or interaction.user, channel=channel, message=origin)
        await events.interaction_create(self, ix.payload)
        return ix

    # =========================================================================================
    # reading back what the bot did
    # =========================================================================================
    @property
    def actions(self) -> list[Action]:
        """Every action of the bot, in order (see ``Action.kind`` for the kinds)."""
        return list(self.store.actions)

    def actions_of(self, *kinds: str) -> list[Action]:
        return [a for a in self.store.actions if a.kind in kinds]

    def messages(self, channel: Channel | None = None) -> list[dict[str, Any]]:
        """Current (edited, not deleted) messages, oldest first; includes ephemeral ones."""
        msgs = [m for m in self.store.messages.values() if channel is None or m["channel_id"] == str(channel.id)]
        return copy.deepcopy(sorted(msgs, key=lambda m: int(m["id"])))

    def bot_messages(self, channel: Channel | None = None) -> list[dict[str, Any]]:
        """Current messages authored by the bot (channel messages and interaction responses)."""
        return [m for m in self.messages(channel) if m["author"]["id"] == str(self.bot_user.id)]

    def message(self, message_id: int | str) -> dict[str, Any]:
        return copy.deepcopy(self._message(int(message_id)))

    async def wait_for(
        self,
        kind: str | tuple[str, ...] | None = None,
        predicate: Callable[[Action], bool] | None = None,
        *,
        channel: Channel | None = None,
        timeout: float = 5.0,
    ) -> Action:
        """The earliest bot action (already logged or still to come) matching ``kind`` /
        ``predicate`` / ``channel`` that no previous ``wait_for`` returned."""
        kinds = (kind,) if isinstance(kind, str) else kind

        def match(a: Action) -> bool:
            return (
                (kinds is None or a.kind in kinds)
                and (channel is None or a.channel_id == channel.id)
                and (predicate is None or predicate(a))
            )

        return await self.store.wait_for(match, timeout=timeout)

    def file(self, attachment: dict[str, Any] | StoredFile | int | str) -> StoredFile:
        """The stored file behind an attachment object / id."""
        if isinstance(attachment, StoredFile):
            return attachment
        fid = int(attachment["id"]) if isinstance(attachment, dict) else int(attachment)
        return self.store.files[fid]

    async def download(self, attachment: dict[str, Any] | StoredFile | str) -> bytes:
        """Fetch a file from the double's CDN over HTTP (like a Discord client would)."""
        url = (
            attachment
            if isinstance(attachment, str)
            else (attachment.url if isinstance(attachment, StoredFile) else attachment["url"])
        )
        if self._http is None:
            self._http = aiohttp.ClientSession()
        async with self._http.get(url) as resp:
            if resp.status != 200:
                raise LookupError(f"CDN answered {resp.status} for {url}")
            return await resp.read()

    # =========================================================================================
    # faults
    # =========================================================================================
    def fail_next(
        self,
        method: str,
        path: str,
        status: int = 429,
        *,
        times: int = 1,
        retry_after: float = 0.2,
        is_global: bool = False,
        body: Any = None,
    ) -> Fault:
        """Answer the next ``times`` ``method path`` requests with ``status`` (429 with
        ``retry_after``, or 5xx). ``path`` is the route template under /api/v10, e.g.
        ``"/channels/{channel_id}/messages"``; ``"*"`` matches any route."""
        return self.faults.add(Fault(method.upper(), path, status, times, retry_after, is_global, body))

    def fail_cdn(self, attachment: dict[str, Any] | StoredFile | int, status: int = 404) -> None:
        """Make the CDN answer ``status`` for a file (a message dict fails all its attachments)."""
        if isinstance(attachment, dict) and "attachments" in attachment:
            for att in attachment["attachments"]:
                self.file(att).cdn_status = status
        else:
            self.file(attachment).cdn_status = status

    async def disconnect_gateway(self, code: int = 4000, reason: str = "Unknown error.") -> int:
        """Close the bot's gateway connection(s) with ``code``; returns how many were closed.
        4000 is resumable: discord.py reconnects to ``resume_gateway_url`` and sends RESUME."""
        return await self.gateway.disconnect(code, reason)

    async def request_reconnect(self) -> None:
        """Opcode 7 RECONNECT: the bot should reconnect and RESUME."""
        await self.gateway.send_op(RECONNECT, None)

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Opcode 9 INVALID_SESSION. With ``resumable=False`` discord.py re-IDENTIFYs (after
        its own 5 s ``before_identify_hook`` pause)."""
        if not resumable:
            for session in self.gateway.sessions.values():
                session.valid = False
        await self.gateway.send_op(INVALID_SESSION, resumable)

    # =========================================================================================
    # internals
    # =========================================================================================
    def _message(self, ref: MessageRef) -> dict[str, Any]:
        if isinstance(ref, Action):
            ref = ref.message_id  # type: ignore[assignment]
        mid = int(ref["id"]) if isinstance(ref, dict) else int(ref)  # type: ignore[arg-type]
        msg = self.store.messages.get(mid)
        if msg is None:
            raise LookupError(f"no message {mid}")
        return msg

    def delete_message(self, msg: dict[str, Any]) -> None:
        mid = int(msg["id"])
        self.store.deleted_messages[mid] = self.store.messages.pop(mid)
