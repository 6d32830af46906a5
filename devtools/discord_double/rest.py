"""REST API v10: the routes discord.py calls for a bot like ours, each next to the Discord docs
page it follows. Interaction callbacks and webhooks are in ``rest_interactions.py``.

A middleware wraps every ``/api/v10`` request: bot-token auth, queued faults, rate-limit
buckets and headers, Discord's JSON error shape, and the request log (``double.requests``).
"""

from __future__ import annotations

import re
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from . import errors, events
from .errors import DiscordError, form_error, json_response
from .messages import read_body, validate_content
from .ratelimits import VIA, bucket_hash, normalise_template, rate_limited_response
from .state import PERMISSIONS, Channel

if TYPE_CHECKING:
    from .server import DiscordDouble

API = "/api/v10"
routes = web.RouteTableDef()
DOUBLE: web.AppKey[DiscordDouble] = web.AppKey("discord_double")


@dataclass
class RequestRecord:
    """One REST request as the double answered it (``double.requests``)."""

    method: str
    path: str
    template: str
    status: int = 0
    code: int | None = None  # Discord JSON error code, when there was one
    at: float = field(default_factory=time.monotonic)

    def __repr__(self) -> str:
        return f"<{self.method} {self.path} -> {self.status}{f' ({self.code})' if self.code else ''}>"


def _double(request: web.Request) -> DiscordDouble:
    return request.app[DOUBLE]


# ---------------------------------------------------------------------------------------------
# middleware
# ---------------------------------------------------------------------------------------------
_NO_AUTH = ("/webhooks/", "/interactions/")  # these authenticate with the interaction token
# Rate-limit buckets are per route *and* these path parameters.
# https://discord.com/developers/docs/topics/rate-limits#rate-limits
_MAJOR_PARAMETERS = ("channel_id", "guild_id", "webhook_id", "webhook_token", "interaction_id", "interaction_token")


@web.middleware
async def api_middleware(request: web.Request, handler):
    if not request.path.startswith("/api/"):
        return await handler(request)  # gateway websocket and CDN
    double = _double(request)
    match = request.match_info
    resource = match.route.resource
    template = normalise_template(resource.canonical if resource is not None else request.path)
    record = RequestRecord(request.method, request.path, template)
    double.requests.append(record)
    headers: dict[str, str] = {}
    try:
        if match.http_exception is not None:  # no such route
            double.unhandled_requests.append(f"{request.method} {request.path}")
            status = match.http_exception.status
            raise DiscordError(status, errors.METHOD_NOT_ALLOWED if status == 405 else errors.NOT_FOUND)
        if not any(p in template for p in _NO_AUTH) and request.headers.get("Authorization") != f"Bot {double.token}":
            raise DiscordError(401, errors.UNAUTHORIZED)
        bucket = bucket_hash(request.method, template)
        fault = double.faults.take(request.method, template)
        if fault is not None:
            response = fault.response(bucket)
        else:
            major = "+".join(match[k] for k in _MAJOR_PARAMETERS if k in match)
            allowed, headers, retry_after = double.buckets.hit(request.method, template, major)
            if not allowed:
                response = rate_limited_response(
                    retry_after=retry_after, is_global=False, bucket=bucket, limit=double.buckets.policy.limit
                )
            else:
                response = await handler(request)
                response.headers.update(headers)
    except DiscordError as exc:
        response = json_response(exc.body(), status=exc.status, headers=headers)  # errors count too
        record.code = exc.code
    except Exception as exc:  # noqa: BLE001  (a bug in the double: answer 400 so discord.py won't retry it)
        double.internal_errors.append(f"{request.method} {request.path}: {traceback.format_exc()}")
        response = json_response({"message": f"discord double internal error: {exc!r}", "code": 0}, status=400)
    response.headers.setdefault("Via", VIA)
    record.status = response.status
    return response


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def get_channel(double: DiscordDouble, channel_id: str) -> Channel:
    channel = double.store.channel(int(channel_id)) if channel_id.isdigit() else None
    if channel is None:
        raise DiscordError(404, errors.UNKNOWN_CHANNEL)
    return channel


def get_message(double: DiscordDouble, channel: Channel, message_id: str) -> dict[str, Any]:
    msg = double.store.messages.get(int(message_id)) if message_id.isdigit() else None
    if msg is None or msg["channel_id"] != str(channel.id):
        raise DiscordError(404, errors.UNKNOWN_MESSAGE)
    return msg


def require_permissions(double: DiscordDouble, channel: Channel, *names: str) -> None:
    """https://discord.com/developers/docs/topics/permissions"""
    guild = double.store.guild_of(channel)
    if guild is None:
        return
    perms = guild.permissions_for(double.bot_user.id, channel)
    if any(not perms & PERMISSIONS[n] for n in names):
        raise DiscordError(403, errors.MISSING_PERMISSIONS)


# ---------------------------------------------------------------------------------------------
# gateway, users, application
# ---------------------------------------------------------------------------------------------
@routes.get(API + "/gateway")
async def get_gateway(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/events/gateway#get-gateway"""
    return json_response({"url": _double(request).gateway_url})


@routes.get(API + "/gateway/bot")
async def get_gateway_bot(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/events/gateway#get-gateway-bot"""
    return json_response(
        {
            "url": _double(request).gateway_url,
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1},
        }
    )


@routes.get(API + "/users/@me")
async def get_current_user(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/user#get-current-user"""
    double = _double(request)
    return json_response({**double.bot_user.to_payload(), "verified": True, "mfa_enabled": False, "locale": "en-US"})


@routes.get(API + "/users/{user_id}")
async def get_user(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/user#get-user"""
    uid = request.match_info["user_id"]
    user = _double(request).store.users.get(int(uid)) if uid.isdigit() else None
    if user is None:
        raise DiscordError(404, errors.UNKNOWN_USER)
    return json_response(user.to_payload())


@routes.post(API + "/users/@me/channels")
async def create_dm(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/user#create-dm"""
    double = _double(request)
    body, _ = await read_body(request, double.upload_limit)
    user = double.store.users.get(int(body.get("recipient_id", 0)))
    if user is None:
        raise form_error("recipient_id", "NUMBER_TYPE_COERCE", "Value is not snowflake.")
    channel = double.dm_channel(user)
    double.store.log("dm_create", channel_id=channel.id, request=body)
    return json_response(channel.to_payload())


@routes.get(API + "/oauth2/applications/@me")
@routes.get(API + "/applications/@me")
async def get_current_application(request: web.Request) -> web.Response:
    """discord.py calls this at login (``Client.application_info``).
    https://discord.com/developers/docs/resources/application#get-current-application"""
    double = _double(request)
    owner = double.owner
    return json_response(
        {
            "id": str(double.application_id),
            "name": double.bot_user.username,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": double.application_flags,
            "owner": owner.to_payload(),
            "team": None,
            "bot": double.bot_user.to_payload(),
            "guild_id": None,
            "redirect_uris": [],
            "interactions_endpoint_url": None,  # None: interactions arrive over the gateway
            "approximate_guild_count": len(double.store.guilds),
            "tags": [],
            "integration_types_config": {"0": {}},
        }
    )


# ---------------------------------------------------------------------------------------------
# application commands
# ---------------------------------------------------------------------------------------------
# Chat-input (slash) names: lowercase, no spaces. User and message context menus allow spaces and case.
# https://discord.com/developers/docs/interactions/application-commands#application-command-object-application-command-naming
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


def _check_app(double: DiscordDouble, request: web.Request) -> int | None:
    if request.match_info["application_id"] != str(double.application_id):
        raise DiscordError(403, (20012, "You are not authorized to perform this action on this application"))
    gid = request.match_info.get("guild_id")
    if gid is None:
        return None
    if not gid.isdigit() or int(gid) not in double.store.guilds:
        raise DiscordError(404, errors.UNKNOWN_GUILD)
    return int(gid)


def _normalise_command(
    double: DiscordDouble, guild_id: int | None, data: dict[str, Any], index: int | None
) -> dict[str, Any]:
    """https://discord.com/developers/docs/interactions/application-commands#application-command-object"""
    prefix = "" if index is None else f"{index}."
    ctype = int(data.get("type", 1))
    name = data.get("name") or ""
    valid = bool(_COMMAND_NAME.match(name)) and name == name.lower() if ctype == 1 else 1 <= len(name) <= 32
    if not valid:
        raise form_error(f"{prefix}name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    description = data.get("description", "")
    if ctype == 1 and not 1 <= len(description) <= 100:
        raise form_error(f"{prefix}description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    existing = next(
        (c for c in double.store.commands.get(guild_id, []) if c["name"] == name and c["type"] == ctype), None
    )
    command = {
        "id": existing["id"] if existing else str(double.store.snowflakes.make()),
        "application_id": str(double.application_id),
        "version": str(double.store.snowflakes.make()),
        "type": ctype,
        "name": name,
        "name_localizations": data.get("name_localizations"),
        "description": description,
        "description_localizations": data.get("description_localizations"),
        "default_member_permissions": data.get("default_member_permissions"),
        "dm_permission": data.get("dm_permission", True),
        "nsfw": data.get("nsfw", False),
        "contexts": data.get("contexts"),
        "integration_types": data.get("integration_types", [0]),
        "options": data.get("options") or [],
    }
    if guild_id is not None:
        command["guild_id"] = str(guild_id)
    return command


@routes.get(API + "/applications/{application_id}/commands")
@routes.get(API + "/applications/{application_id}/guilds/{guild_id}/commands")
async def get_commands(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/interactions/application-commands#get-global-application-commands"""
    double = _double(request)
    return json_response(double.store.commands.get(_check_app(double, request), []))


@routes.put(API + "/applications/{application_id}/commands")
@routes.put(API + "/applications/{application_id}/guilds/{guild_id}/commands")
async def bulk_overwrite_commands(request: web.Request) -> web.Response:
    """``CommandTree.sync()``.
    https://discord.com/developers/docs/interactions/application-commands#bulk-overwrite-global-application-commands"""
    double = _double(request)
    guild_id = _check_app(double, request)
    body, _ = await read_body(request, double.upload_limit)
    commands = [_normalise_command(double, guild_id, c, i) for i, c in enumerate(body or [])]
    double.store.commands[guild_id] = commands
    double.store.log("commands_sync", request={"guild_id": guild_id, "commands": body})
    return json_response(commands)


@routes.post(API + "/applications/{application_id}/commands")
@routes.post(API + "/applications/{application_id}/guilds/{guild_id}/commands")
async def create_command(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/interactions/application-commands#create-global-application-command"""
    double = _double(request)
    guild_id = _check_app(double, request)
    body, _ = await read_body(request, double.upload_limit)
    command = _normalise_command(double, guild_id, body, None)
    commands = [c for c in double.store.commands.get(guild_id, []) if c["id"] != command["id"]]
    double.store.commands[guild_id] = commands + [command]
    double.store.log("commands_sync", request={"guild_id": guild_id, "commands": [body]})
    return json_response(command, status=201)


# ---------------------------------------------------------------------------------------------
# guilds and channels
# ---------------------------------------------------------------------------------------------
def _guild(double: DiscordDouble, guild_id: str):
    guild = double.store.guilds.get(int(guild_id)) if guild_id.isdigit() else None
    if guild is None:
        raise DiscordError(404, errors.UNKNOWN_GUILD)
    return guild


@routes.get(API + "/guilds/{guild_id}")
async def get_guild(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/guild#get-guild"""
    return json_response(_guild(_double(request), request.match_info["guild_id"]).to_payload())


@routes.get(API + "/guilds/{guild_id}/channels")
async def get_guild_channels(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/guild#get-guild-channels"""
    guild = _guild(_double(request), request.match_info["guild_id"])
    return json_response([c.to_payload() for c in guild.channels])


@routes.get(API + "/guilds/{guild_id}/members/{user_id}")
async def get_guild_member(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/guild#get-guild-member"""
    guild = _guild(_double(request), request.match_info["guild_id"])
    uid = request.match_info["user_id"]
    member = guild.members.get(int(uid)) if uid.isdigit() else None
    if member is None:
        raise DiscordError(404, (10007, "Unknown Member"))
    return json_response(member.to_payload())


@routes.get(API + "/channels/{channel_id}")
async def get_channel_route(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/channel#get-channel"""
    return json_response(get_channel(_double(request), request.match_info["channel_id"]).to_payload())


@routes.post(API + "/channels/{channel_id}/typing")
async def trigger_typing(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/channel#trigger-typing-indicator"""
    double = _double(request)
    channel = get_channel(double, request.match_info["channel_id"])
    double.store.log("typing", channel_id=channel.id)
    await events.typing_start(double, double.bot_user.id, channel)
    return web.Response(status=204)


# ---------------------------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------------------------
@routes.get(API + "/channels/{channel_id}/messages")
async def get_messages(request: web.Request) -> web.Response:
    """Newest first. https://discord.com/developers/docs/resources/message#get-channel-messages"""
    double = _double(request)
    channel = get_channel(double, request.match_info["channel_id"])
    limit = max(1, min(100, int(request.query.get("limit", 50))))
    msgs = sorted(
        (
            m
            for m in double.store.messages.values()
            if m["channel_id"] == str(channel.id) and not int(m.get("flags", 0)) & 64
        ),
        key=lambda m: int(m["id"]),
        reverse=True,
    )
    if "before" in request.query:
        msgs = [m for m in msgs if int(m["id"]) < int(request.query["before"])]
    if "after" in request.query:
        msgs = [m for m in msgs if int(m["id"]) > int(request.query["after"])][-limit:]
    return json_response(msgs[:limit])


@routes.get(API + "/channels/{channel_id}/messages/{message_id}")
async def get_message_route(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/message#get-channel-message"""
    double = _double(request)
    channel = get_channel(double, request.match_info["channel_id"])
    return json_response(get_message(double, channel, request.match_info["message_id"]))


@routes.post(API + "/channels/{channel_id}/messages")
async def create_message(request: web.Request) -> web.Response:
    """JSON, or multipart with ``payload_json`` + ``files[n]``.
    https://discord.com/developers/docs/resources/message#create-message"""
    double = _double(request)
    channel = get_channel(double, request.match_info["channel_id"])
    body, parts = await read_body(request, double.upload_limit)
    validate_content(body, parts, creating=True)
    require_permissions(double, channel, "VIEW_CHANNEL", "SEND_MESSAGES", *(["ATTACH_FILES"] if parts else []))
    _, files = double.builder.store_files(channel.id, body, parts)
    msg = double.builder.create(
        channel=channel, author=double.bot_user, body=body, files=files, reference=body.get("message_reference")
    )
    double.store.log(
        "message_create", channel_id=channel.id, message_id=int(msg["id"]), message=msg, request=body, files=files
    )
    await events.message_create(double, msg, channel)
    return json_response(msg)


@routes.patch(API + "/channels/{channel_id}/messages/{message_id}")
async def edit_message(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/message#edit-message"""
    double = _double(request)
    channel = get_channel(double, request.match_info["channel_id"])
    msg = get_message(double, channel, request.match_info["message_id"])
    body, parts = await read_body(request, double.upload_limit)
    if msg["author"]["id"] != str(double.bot_user.id) and set(body) - {"flags"}:
        raise DiscordError(403, errors.CANNOT_EDIT_OTHERS_MESSAGE)
    validate_content(body, parts, creating=False)
    if parts:
        require_permissions(double, channel, "ATTACH_FILES")
    by_index, files = double.builder.store_files(channel.id, body, parts)
    double.builder.edit(msg, body, by_index)
    double.store.log(
        "message_edit", channel_id=channel.id, message_id=int(msg["id"]), message=msg, request=body, files=files
    )
    await events.message_update(double, msg, channel)
    return json_response(msg)


@routes.delete(API + "/channels/{channel_id}/messages/{message_id}")
async def delete_message(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/message#delete-message"""
    double = _double(request)
    channel = get_channel(double, request.match_info["channel_id"])
    msg = get_message(double, channel, request.match_info["message_id"])
    double.delete_message(msg)
    double.store.log("message_delete", channel_id=channel.id, message_id=int(msg["id"]), message=msg)
    await events.message_delete(double, msg, channel)
    return web.Response(status=204)


# ---------------------------------------------------------------------------------------------
# reactions
# ---------------------------------------------------------------------------------------------
_CUSTOM_EMOJI = re.compile(r"^(?:a:)?([\w~]{2,32}):(\d+)$")


def _parse_emoji(raw: str) -> dict[str, Any]:
    """Path emoji: a unicode emoji, or ``name:id`` for a custom one (URL-encoded)."""
    raw = unquote(raw)
    m = _CUSTOM_EMOJI.match(raw)
    if m:
        return {"id": m.group(2), "name": m.group(1)}
    if not raw or raw.isascii():
        raise DiscordError(400, errors.UNKNOWN_EMOJI)
    return {"id": None, "name": raw}


def _emoji_key(emoji: dict[str, Any]) -> str:
    return f"{emoji['name']}:{emoji['id']}" if emoji["id"] else emoji["name"]


@routes.put(API + "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me")
async def create_reaction(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/message#create-reaction"""
    double = _double(request)
    channel = get_channel(double, request.match_info["channel_id"])
    msg = get_message(double, channel, request.match_info["message_id"])
    emoji = _parse_emoji(request.match_info["emoji"])
    reactions = msg.setdefault("reactions", [])
    entry = next((r for r in reactions if _emoji_key(r["emoji"]) == _emoji_key(emoji)), None)
    if entry is None:
        reactions.append(
            {
                "count": 1,
                "count_details": {"burst": 0, "normal": 1},
                "me": True,
                "me_burst": False,
                "burst_colors": [],
                "emoji": emoji,
            }
        )
    elif not entry["me"]:
        entry["me"] = True
        entry["count"] += 1
        entry["count_details"]["normal"] += 1
    else:
        return web.Response(status=204)  # already reacted: no-op, like Discord
    double.store.log(
        "reaction_add", channel_id=channel.id, message_id=int(msg["id"]), emoji=_emoji_key(emoji), message=msg
    )
    await events.reaction(double, "MESSAGE_REACTION_ADD", double.bot_user.id, msg, channel, emoji)
    return web.Response(status=204)


@routes.delete(API + "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me")
async def delete_own_reaction(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/resources/message#delete-own-reaction"""
    double = _double(request)
    channel = get_channel(double, request.match_info["channel_id"])
    msg = get_message(double, channel, request.match_info["message_id"])
    emoji = _parse_emoji(request.match_info["emoji"])
    reactions = msg.get("reactions", [])
    entry = next((r for r in reactions if _emoji_key(r["emoji"]) == _emoji_key(emoji) and r["me"]), None)
    if entry is not None:
        entry["me"] = False
        entry["count"] -= 1
        entry["count_details"]["normal"] -= 1
        if entry["count"] <= 0:
            reactions.remove(entry)
        double.store.log(
            "reaction_remove", channel_id=channel.id, message_id=int(msg["id"]), emoji=_emoji_key(emoji), message=msg
        )
        await events.reaction(double, "MESSAGE_REACTION_REMOVE", double.bot_user.id, msg, channel, emoji)
    return web.Response(status=204)
