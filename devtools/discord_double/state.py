"""Everything the double knows, in memory: the guild, its channels and members, messages,
uploaded files, interactions, and an ordered log of every action the bot performed.

Each entity renders itself in the JSON shape Discord documents (``to_payload``); the link to
the relevant page of the Discord developer docs is next to each one.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .snowflakes import Clock, SnowflakeFactory, iso

# https://discord.com/developers/docs/topics/permissions#permissions-bitwise-permission-flags
PERMISSIONS = {
    "CREATE_INSTANT_INVITE": 1 << 0,
    "ADMINISTRATOR": 1 << 3,
    "ADD_REACTIONS": 1 << 6,
    "VIEW_CHANNEL": 1 << 10,
    "SEND_MESSAGES": 1 << 11,
    "EMBED_LINKS": 1 << 14,
    "ATTACH_FILES": 1 << 15,
    "READ_MESSAGE_HISTORY": 1 << 16,
    "USE_EXTERNAL_EMOJIS": 1 << 18,
    "CHANGE_NICKNAME": 1 << 26,
    "USE_APPLICATION_COMMANDS": 1 << 31,
    "SEND_MESSAGES_IN_THREADS": 1 << 38,
}
DEFAULT_PERMISSIONS = sum(
    PERMISSIONS[p]
    for p in (
        "CREATE_INSTANT_INVITE",
        "ADD_REACTIONS",
        "VIEW_CHANNEL",
        "SEND_MESSAGES",
        "EMBED_LINKS",
        "ATTACH_FILES",
        "READ_MESSAGE_HISTORY",
        "USE_EXTERNAL_EMOJIS",
        "CHANGE_NICKNAME",
        "USE_APPLICATION_COMMANDS",
        "SEND_MESSAGES_IN_THREADS",
    )
)

# https://discord.com/developers/docs/resources/message#message-object-message-flags
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7


@dataclass
class User:
    """https://discord.com/developers/docs/resources/user#user-object"""

    id: int
    username: str
    bot: bool = False
    global_name: str | None = None
    avatar: str | None = None

    def to_payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",  # pomelo usernames: discriminator is "0"
            "global_name": self.global_name,
            "avatar": self.avatar,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
        }
        if self.bot:
            data["bot"] = True
        return data

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass
class Role:
    """https://discord.com/developers/docs/topics/permissions#role-object"""

    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    bot_id: int | None = None

    def to_payload(self) -> dict[str, Any]:
        data = {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": False,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass
class Member:
    """https://discord.com/developers/docs/resources/guild#guild-member-object
    (``flags`` is required by discord.py)."""

    user: User
    roles: list[int]
    joined_at: float
    nick: str | None = None

    def to_payload(self, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r) for r in self.roles],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": iso(self.joined_at),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.to_payload()
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass
class Channel:
    """https://discord.com/developers/docs/resources/channel#channel-object
    (type 0 = GUILD_TEXT, type 1 = DM)."""

    id: int
    name: str | None
    type: int = 0
    guild_id: int | None = None
    position: int = 0
    recipients: list[User] = field(default_factory=list)
    overwrites: list[dict[str, Any]] = field(default_factory=list)
    last_message_id: int | None = None

    @property
    def is_dm(self) -> bool:
        return self.type == 1

    def to_payload(self, *, in_guild_create: bool = False) -> dict[str, Any]:
        if self.is_dm:
            return {
                "id": str(self.id),
                "type": 1,
                "last_message_id": str(self.last_message_id) if self.last_message_id else None,
                "recipients": [u.to_payload() for u in self.recipients],
                "flags": 0,
            }
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "name": self.name,
            "position": self.position,
            "permission_overwrites": copy.deepcopy(self.overwrites),
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "rate_limit_per_user": 0,
            "last_message_id": str(self.last_message_id) if self.last_message_id else None,
            "flags": 0,
        }
        if not in_guild_create:  # GUILD_CREATE channels omit guild_id
            data["guild_id"] = str(self.guild_id)
        return data

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"


@dataclass
class Guild:
    """https://discord.com/developers/docs/resources/guild#guild-object"""

    id: int
    name: str
    owner_id: int
    roles: list[Role] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    members: dict[int, Member] = field(default_factory=dict)
    premium_tier: int = 0

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.to_payload() for r in self.roles],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": self.premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }

    def to_create_payload(self, joined_at: float) -> dict[str, Any]:
        """GUILD_CREATE = guild object + extra fields.
        https://discord.com/developers/docs/events/gateway-events#guild-create"""
        data = self.to_payload()
        data.update(
            joined_at=iso(joined_at),
            large=False,
            unavailable=False,
            member_count=len(self.members),
            voice_states=[],
            members=[m.to_payload() for m in self.members.values()],
            channels=[c.to_payload(in_guild_create=True) for c in self.channels],
            threads=[],
            presences=[],
            stage_instances=[],
            guild_scheduled_events=[],
            soundboard_sounds=[],
        )
        return data

    def channel(self, channel_id: int) -> Channel | None:
        return next((c for c in self.channels if c.id == channel_id), None)

    def permissions_for(self, user_id: int, channel: Channel | None = None) -> int:
        """https://discord.com/developers/docs/topics/permissions#permission-overwrites"""
        member = self.members.get(user_id)
        if user_id == self.owner_id:
            return (1 << 53) - 1
        role_ids = {self.id, *(member.roles if member else [])}
        perms = 0
        for role in self.roles:
            if role.id in role_ids:
                perms |= role.permissions
        if perms & PERMISSIONS["ADMINISTRATOR"]:
            return (1 << 53) - 1
        if channel is None:
            return perms
        ow = {int(o["id"]): o for o in channel.overwrites}
        if self.id in ow:
            perms = (perms & ~int(ow[self.id]["deny"])) | int(ow[self.id]["allow"])
        allow = deny = 0
        for rid in role_ids - {self.id}:
            if rid in ow:
                allow |= int(ow[rid]["allow"])
                deny |= int(ow[rid]["deny"])
        perms = (perms & ~deny) | allow
        if user_id in ow:
            perms = (perms & ~int(ow[user_id]["deny"])) | int(ow[user_id]["allow"])
        return perms


@dataclass
class StoredFile:
    """A file on the double's CDN: uploaded by a test (as a user) or by the bot.
    Rendered as https://discord.com/developers/docs/resources/message#attachment-object"""

    id: int
    filename: str
    content_type: str | None
    data: bytes
    url: str
    description: str | None = None
    ephemeral: bool = False
    width: int | None = None
    height: int | None = None
    cdn_status: int = 200  # fault injection: what the CDN answers for this file

    @property
    def size(self) -> int:
        return len(self.data)

    def to_payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        if self.description is not None:
            data["description"] = self.description
        if self.width is not None:
            data["width"], data["height"] = self.width, self.height
        if self.ephemeral:
            data["ephemeral"] = True
        return data


@dataclass
class Action:
    """One thing the bot did, in the order the double saw it.

    ``kind`` is one of: ``message_create``, ``message_edit``, ``message_delete``, ``typing``,
    ``reaction_add``, ``reaction_remove``, ``interaction_response``, ``interaction_edit``,
    ``interaction_delete``, ``followup_create``, ``commands_sync``, ``dm_create``.
    """

    index: int
    kind: str
    at: float
    channel_id: int | None = None
    message_id: int | None = None
    message: dict[str, Any] | None = None  # the message after the action (a snapshot)
    request: dict[str, Any] | None = None  # the JSON the bot sent (payload_json for multipart)
    files: list[StoredFile] = field(default_factory=list)  # files uploaded in this request
    interaction_id: int | None = None
    response_type: int | None = None  # interaction callback type (4, 5, 6, 7, 8, 9, ...)
    emoji: str | None = None

    @property
    def content(self) -> str | None:
        if self.message is not None:
            return self.message.get("content")
        if self.request is not None:
            data = self.request.get("data", self.request)
            return data.get("content") if isinstance(data, dict) else None
        return None

    @property
    def attachments(self) -> list[dict[str, Any]]:
        """Attachment objects of the resulting message (all of them, not only new files)."""
        return list(self.message.get("attachments", [])) if self.message else []

    def __repr__(self) -> str:  # compact, for timeout messages
        bits = [f"#{self.index}", self.kind]
        if self.response_type is not None:
            bits.append(f"type={self.response_type}")
        if self.content:
            bits.append(repr(self.content[:40]))
        if self.files:
            bits.append(f"files={[f.filename for f in self.files]}")
        if self.emoji:
            bits.append(self.emoji)
        return f"<Action {' '.join(bits)}>"


@dataclass
class InteractionHandle:
    """An interaction the test created (slash command, button press, autocomplete, modal).

    https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object
    """

    id: int
    token: str
    type: int
    payload: dict[str, Any]
    created_at: float
    channel_id: int
    user: User
    message_id: int | None = None  # the message a component belongs to (type 3)
    response_type: int | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    choices: list[dict[str, Any]] | None = None  # autocomplete result (callback type 8)
    modal: dict[str, Any] | None = None  # modal the bot opened (callback type 9)
    _store: Store | None = field(default=None, repr=False)

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    async def wait_response(self, timeout: float = 5.0) -> Action:
        """The interaction callback (the bot's initial response); the same action every time."""
        assert self._store is not None
        return await self._store.wait_for(
            lambda a: a.kind == "interaction_response" and a.interaction_id == self.id, timeout=timeout, consume=False
        )

    async def wait_for(
        self, kind: str | None = None, predicate: Callable[[Action], bool] | None = None, *, timeout: float = 5.0
    ) -> Action:
        """The next action of this interaction (callback, edits, followups) matching kind/predicate."""
        assert self._store is not None
        return await self._store.wait_for(
            lambda a: (
                a.interaction_id == self.id and (kind is None or a.kind == kind) and (predicate is None or predicate(a))
            ),
            timeout=timeout,
        )

    def original_message(self) -> dict[str, Any] | None:
        assert self._store is not None
        if self.original_message_id is None:
            return None
        return self._store.messages.get(self.original_message_id)


_MENTION_RE = re.compile(r"<@!?(\d+)>")


class Store:
    """In-memory state and the action log."""

    def __init__(self, clock: Clock, snowflakes: SnowflakeFactory) -> None:
        self.clock = clock
        self.snowflakes = snowflakes
        self.users: dict[int, User] = {}
        self.guilds: dict[int, Guild] = {}
        self.dm_channels: dict[int, Channel] = {}
        self.messages: dict[int, dict[str, Any]] = {}  # id -> message payload (REST shape)
        self.deleted_messages: dict[int, dict[str, Any]] = {}
        self.files: dict[int, StoredFile] = {}
        self.interactions: dict[int, InteractionHandle] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None=global) -> commands
        self.actions: list[Action] = []
        self._consumed: set[int] = set()
        self._waiters: set[asyncio.Event] = set()

    # -- lookups ----------------------------------------------------------------------------
    def channel(self, channel_id: int) -> Channel | None:
        if channel_id in self.dm_channels:
            return self.dm_channels[channel_id]
        for guild in self.guilds.values():
            ch = guild.channel(channel_id)
            if ch is not None:
                return ch
        return None

    def guild_of(self, channel: Channel) -> Guild | None:
        return self.guilds.get(channel.guild_id) if channel.guild_id else None

    def mentions_in(self, content: str) -> list[User]:
        ids = dict.fromkeys(int(m) for m in _MENTION_RE.findall(content or ""))
        return [self.users[i] for i in ids if i in self.users]

    # -- the action log ---------------------------------------------------------------------
    def log(self, kind: str, **fields: Any) -> Action:
        if fields.get("message") is not None:
            fields["message"] = copy.deepcopy(fields["message"])
        action = Action(index=len(self.actions), kind=kind, at=self.clock.now(), **fields)
        self.actions.append(action)
        for event in self._waiters:
            event.set()
        return action

    async def wait_for(self, match: Callable[[Action], bool], *, timeout: float = 5.0, consume: bool = True) -> Action:
        """The earliest logged action matching ``match`` that no earlier (consuming) ``wait_for``
        returned; waits (at most ``timeout`` seconds) for one to arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            while True:
                for action in self.actions:
                    if (not consume or action.index not in self._consumed) and match(action):
                        if consume:
                            self._consumed.add(action.index)
                        return action
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(
                        f"the bot did nothing matching within {timeout}s; actions so far: {self.actions!r}"
                    )
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    pass
        finally:
            self._waiters.discard(event)
