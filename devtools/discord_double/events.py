"""Gateway dispatches the double sends when something happens (a user posts, the bot edits...),
with the intent that gates each one and the MESSAGE_CONTENT rule.

Docs: https://discord.com/developers/docs/events/gateway-events#receive-events
      https://discord.com/developers/docs/events/gateway#message-content-intent
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from .gateway import INTENTS, Session
from .state import FLAG_EPHEMERAL, Channel

if TYPE_CHECKING:
    from .server import DiscordDouble

_CONTENT_FIELDS = {"content": "", "embeds": [], "attachments": [], "components": []}


def _intent(channel: Channel, guild_intent: str, dm_intent: str) -> int:
    return INTENTS[dm_intent] if channel.is_dm else INTENTS[guild_intent]


def _gateway_message(double: DiscordDouble, msg: dict[str, Any], channel: Channel) -> dict[str, Any]:
    """MESSAGE_CREATE/UPDATE carry the message plus ``guild_id`` and a partial ``member``.
    https://discord.com/developers/docs/events/gateway-events#message-create"""
    data = copy.deepcopy(msg)
    guild = double.store.guild_of(channel)
    if guild is not None:
        data["guild_id"] = str(guild.id)
        member = guild.members.get(int(msg["author"]["id"]))
        if member is not None and "webhook_id" not in msg:
            data["member"] = member.to_payload(with_user=False)
    return data


def _strip_content(double: DiscordDouble, msg: dict[str, Any], channel: Channel):
    """Without the MESSAGE_CONTENT intent, content/embeds/attachments/components arrive empty,
    except in DMs, for the bot's own messages and for messages that mention the bot."""

    def transform(session: Session, data: dict[str, Any]) -> dict[str, Any]:
        if session.intents & INTENTS["MESSAGE_CONTENT"] or channel.is_dm:
            return data
        bot_id = str(double.bot_user.id)
        if data["author"]["id"] == bot_id or any(u["id"] == bot_id for u in data.get("mentions", [])):
            return data
        stripped = dict(data)
        stripped.update(copy.deepcopy(_CONTENT_FIELDS))
        return stripped

    return transform


async def message_create(double: DiscordDouble, msg: dict[str, Any], channel: Channel) -> None:
    if int(msg.get("flags", 0)) & FLAG_EPHEMERAL:
        return  # ephemeral messages are never dispatched
    await double.gateway.dispatch(
        "MESSAGE_CREATE",
        _gateway_message(double, msg, channel),
        intent=_intent(channel, "GUILD_MESSAGES", "DIRECT_MESSAGES"),
        transform=_strip_content(double, msg, channel),
    )


async def message_update(double: DiscordDouble, msg: dict[str, Any], channel: Channel) -> None:
    """https://discord.com/developers/docs/events/gateway-events#message-update"""
    if int(msg.get("flags", 0)) & FLAG_EPHEMERAL:
        return
    await double.gateway.dispatch(
        "MESSAGE_UPDATE",
        _gateway_message(double, msg, channel),
        intent=_intent(channel, "GUILD_MESSAGES", "DIRECT_MESSAGES"),
        transform=_strip_content(double, msg, channel),
    )


async def message_delete(double: DiscordDouble, msg: dict[str, Any], channel: Channel) -> None:
    """https://discord.com/developers/docs/events/gateway-events#message-delete"""
    if int(msg.get("flags", 0)) & FLAG_EPHEMERAL:
        return
    data = {"id": msg["id"], "channel_id": str(channel.id)}
    if channel.guild_id:
        data["guild_id"] = str(channel.guild_id)
    await double.gateway.dispatch("MESSAGE_DELETE", data, intent=_intent(channel, "GUILD_MESSAGES", "DIRECT_MESSAGES"))


async def reaction(
    double: DiscordDouble, event: str, user_id: int, msg: dict[str, Any], channel: Channel, emoji: dict[str, Any]
) -> None:
    """https://discord.com/developers/docs/events/gateway-events#message-reaction-add"""
    data: dict[str, Any] = {
        "user_id": str(user_id),
        "channel_id": str(channel.id),
        "message_id": msg["id"],
        "emoji": emoji,
        "burst": False,
        "type": 0,
    }
    guild = double.store.guild_of(channel)
    if guild is not None:
        data["guild_id"] = str(guild.id)
        if event == "MESSAGE_REACTION_ADD" and user_id in guild.members:
            data["member"] = guild.members[user_id].to_payload()
        data["message_author_id"] = msg["author"]["id"]
    await double.gateway.dispatch(
        event, data, intent=_intent(channel, "GUILD_MESSAGE_REACTIONS", "DIRECT_MESSAGE_REACTIONS")
    )


async def typing_start(double: DiscordDouble, user_id: int, channel: Channel) -> None:
    """https://discord.com/developers/docs/events/gateway-events#typing-start"""
    data: dict[str, Any] = {
        "channel_id": str(channel.id),
        "user_id": str(user_id),
        "timestamp": int(double.clock.now()),
    }
    guild = double.store.guild_of(channel)
    if guild is not None:
        data["guild_id"] = str(guild.id)
        if user_id in guild.members:
            data["member"] = guild.members[user_id].to_payload()
    await double.gateway.dispatch(
        "TYPING_START", data, intent=_intent(channel, "GUILD_MESSAGE_TYPING", "DIRECT_MESSAGE_TYPING")
    )


async def interaction_create(double: DiscordDouble, payload: dict[str, Any]) -> None:
    """Interactions are not gated by intents.
    https://discord.com/developers/docs/events/gateway-events#interaction-create"""
    await double.gateway.dispatch("INTERACTION_CREATE", payload)
