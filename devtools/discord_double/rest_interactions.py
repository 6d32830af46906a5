"""Interaction callbacks, followups and edits of interaction responses (via webhook routes).

Timing rules Discord enforces, and the double with it:
  * the initial callback must arrive within 3 s of the interaction (``initial_response_timeout``),
    otherwise 404 ``10062 Unknown interaction``;
  * an interaction can be acknowledged once: then 400 ``40060``;
  * the token works for 15 minutes (``interaction_token_lifetime``) for followups and edits,
    then 401 ``50027 Invalid Webhook Token``.
Ages come from the interaction's snowflake, so an interaction created "16 minutes ago" is expired.

Docs: https://discord.com/developers/docs/interactions/receiving-and-responding
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import errors, events
from .errors import DiscordError, form_error, json_response
from .messages import read_body, validate_content
from .rest import API, _double, routes
from .state import FLAG_EPHEMERAL, FLAG_LOADING, InteractionHandle

if TYPE_CHECKING:
    from .server import DiscordDouble

# Interaction type -> callback types Discord accepts for it.
# https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-interaction-callback-type
_ALLOWED_CALLBACKS = {
    2: {4, 5, 9},  # APPLICATION_COMMAND
    3: {4, 5, 6, 7, 9},  # MESSAGE_COMPONENT
    4: {8},  # APPLICATION_COMMAND_AUTOCOMPLETE
    5: {4, 5, 6, 7},  # MODAL_SUBMIT
}


def interaction_metadata(double: DiscordDouble, ix: InteractionHandle) -> dict[str, Any]:
    """https://discord.com/developers/docs/resources/message#message-interaction-metadata-object"""
    data: dict[str, Any] = {
        "id": str(ix.id),
        "type": ix.type,
        "user": ix.user.to_payload(),
        "authorizing_integration_owners": {"0": ix.payload.get("guild_id", "0")},
    }
    if ix.type == 2:
        data["name"] = ix.payload["data"]["name"]
        data["command_type"] = ix.payload["data"].get("type", 1)
    if ix.message_id is not None:
        data["interacted_message_id"] = str(ix.message_id)
    if ix.original_message_id is not None:
        data["original_response_message_id"] = str(ix.original_message_id)
    return data


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


@routes.post(API + "/interactions/{interaction_id}/{interaction_token}/callback")
async def create_interaction_response(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/interactions/receiving-and-responding#create-interaction-response"""
    double = _double(request)
    store = double.store
    iid = request.match_info["interaction_id"]
    ix = store.interactions.get(int(iid)) if iid.isdigit() else None
    if ix is None or ix.token != request.match_info["interaction_token"]:
        raise DiscordError(404, errors.UNKNOWN_INTERACTION)
    if ix.acknowledged:
        raise DiscordError(400, errors.ALREADY_ACKNOWLEDGED)
    if double.clock.now() - ix.created_at > double.initial_response_timeout:
        raise DiscordError(404, errors.UNKNOWN_INTERACTION)  # too late: the user saw "interaction failed"
    body, parts = await read_body(request, double.upload_limit)
    rtype = int(body.get("type", 0))
    data: dict[str, Any] = body.get("data") or {}
    allowed = _ALLOWED_CALLBACKS.get(ix.type, set())
    if rtype not in allowed:
        raise form_error("type", "BASE_TYPE_CHOICES", f"Value must be one of {sorted(allowed)}.")
    channel = store.channel(ix.channel_id)
    assert channel is not None
    msg: dict[str, Any] | None = None
    files = []
    if rtype == 4:  # CHANNEL_MESSAGE_WITH_SOURCE
        validate_content(data, parts, creating=True)
        _, files = double.builder.store_files(channel.id, data, parts)
        msg = double.builder.create(
            channel=channel,
            author=double.bot_user,
            body=data,
            files=files,
            msg_type=20 if ix.type == 2 else 0,
            webhook_id=double.application_id,
            interaction=interaction_metadata(double, ix),
        )
        ix.original_message_id = int(msg["id"])
        await events.message_create(double, msg, channel)
    elif rtype == 5:  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: a "Bot is thinking..." message
        msg = double.builder.create(
            channel=channel,
            author=double.bot_user,
            content="",
            msg_type=20 if ix.type == 2 else 0,
            flags=FLAG_LOADING | (int(data.get("flags", 0)) & FLAG_EPHEMERAL),
            webhook_id=double.application_id,
            interaction=interaction_metadata(double, ix),
        )
        ix.original_message_id = int(msg["id"])
        await events.message_create(double, msg, channel)
    elif rtype in (6, 7):  # DEFERRED_UPDATE_MESSAGE / UPDATE_MESSAGE: about the component's message
        ix.original_message_id = ix.message_id
        if rtype == 7:
            target = store.messages.get(ix.message_id or 0)
            if target is None:
                raise DiscordError(404, errors.UNKNOWN_MESSAGE)
            validate_content(data, parts, creating=False)
            by_index, files = double.builder.store_files(channel.id, data, parts)
            msg = double.builder.edit(target, data, by_index)
            await events.message_update(double, msg, channel)
    elif rtype == 8:  # APPLICATION_COMMAND_AUTOCOMPLETE_RESULT
        choices = data.get("choices") or []
        if len(choices) > 25:
            raise form_error("data.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        ix.choices = choices
    elif rtype == 9:  # MODAL
        if not data.get("custom_id") or not data.get("title") or not data.get("components"):
            raise form_error("data", "BASE_TYPE_REQUIRED", "custom_id, title and components are required.")
        ix.modal = data
    ix.response_type = rtype
    store.log(
        "interaction_response",
        channel_id=channel.id,
        message_id=int(msg["id"]) if msg else ix.original_message_id,
        message=msg,
        request=body,
        files=files,
        interaction_id=ix.id,
        response_type=rtype,
    )
    if not _truthy(request.query.get("with_response")):
        return web.Response(status=204)
    # https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-callback-interaction-callback-response-object
    interaction: dict[str, Any] = {"id": str(ix.id), "type": ix.type}
    resource: dict[str, Any] = {"type": rtype}
    if ix.original_message_id is not None and rtype in (4, 5, 7):
        origin = store.messages[ix.original_message_id]
        interaction["response_message_id"] = str(ix.original_message_id)
        interaction["response_message_loading"] = rtype == 5
        interaction["response_message_ephemeral"] = bool(int(origin["flags"]) & FLAG_EPHEMERAL)
    if msg is not None and rtype in (4, 7):
        resource["message"] = msg
    return json_response({"interaction": interaction, "resource": resource})


# ---------------------------------------------------------------------------------------------
# webhook routes for interaction tokens: followups and the original response
# ---------------------------------------------------------------------------------------------
def _interaction_from_webhook(double: DiscordDouble, request: web.Request) -> InteractionHandle:
    if request.match_info["webhook_id"] != str(double.application_id):
        raise DiscordError(404, errors.UNKNOWN_WEBHOOK)
    token = request.match_info["webhook_token"]
    ix = next((i for i in double.store.interactions.values() if i.token == token), None)
    if ix is None or double.clock.now() - ix.created_at > double.interaction_token_lifetime:
        raise DiscordError(401, errors.INVALID_WEBHOOK_TOKEN)
    if not ix.acknowledged:
        raise DiscordError(404, errors.UNKNOWN_WEBHOOK)  # no response yet: the webhook does not exist
    return ix


def _webhook_message(double: DiscordDouble, ix: InteractionHandle, message_id: str) -> dict[str, Any]:
    if message_id == "@original":
        mid = ix.original_message_id
    else:
        mid = int(message_id) if message_id.isdigit() else None
        if mid not in (ix.original_message_id, *ix.followup_ids):
            mid = None
    msg = double.store.messages.get(mid) if mid is not None else None
    if msg is None:
        raise DiscordError(404, errors.UNKNOWN_MESSAGE)
    return msg


@routes.post(API + "/webhooks/{webhook_id}/{webhook_token}")
async def create_followup_message(request: web.Request) -> web.Response:
    """After a deferred response (type 5) the first followup replaces the "thinking" message
    (what Discord does; see discord/discord-api-docs#2809); later ones are new messages.
    https://discord.com/developers/docs/interactions/receiving-and-responding#create-followup-message"""
    double = _double(request)
    ix = _interaction_from_webhook(double, request)
    channel = double.store.channel(ix.channel_id)
    assert channel is not None
    body, parts = await read_body(request, double.upload_limit)
    validate_content(body, parts, creating=True)
    original = double.store.messages.get(ix.original_message_id or 0)
    by_index, files = double.builder.store_files(channel.id, body, parts)
    if ix.response_type == 5 and not ix.followup_ids and original is not None and int(original["flags"]) & FLAG_LOADING:
        msg = double.builder.edit(original, {k: v for k, v in body.items() if k != "flags"}, by_index)
        msg["flags"] = int(msg["flags"]) & ~FLAG_LOADING
        ix.followup_ids.append(int(msg["id"]))
        await events.message_update(double, msg, channel)
    else:
        msg = double.builder.create(
            channel=channel,
            author=double.bot_user,
            body=body,
            files=files,
            webhook_id=double.application_id,
            interaction=interaction_metadata(double, ix),
        )
        ix.followup_ids.append(int(msg["id"]))
        await events.message_create(double, msg, channel)
    double.store.log(
        "followup_create",
        channel_id=channel.id,
        message_id=int(msg["id"]),
        message=msg,
        request=body,
        files=files,
        interaction_id=ix.id,
    )
    if not _truthy(request.query.get("wait")):
        return web.Response(status=204)
    return json_response(msg)


@routes.get(API + "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
async def get_webhook_message(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/interactions/receiving-and-responding#get-original-interaction-response"""
    double = _double(request)
    ix = _interaction_from_webhook(double, request)
    return json_response(_webhook_message(double, ix, request.match_info["message_id"]))


@routes.patch(API + "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
async def edit_webhook_message(request: web.Request) -> web.Response:
    """``@original`` or a followup id.
    https://discord.com/developers/docs/interactions/receiving-and-responding#edit-original-interaction-response
    https://discord.com/developers/docs/interactions/receiving-and-responding#edit-followup-message"""
    double = _double(request)
    ix = _interaction_from_webhook(double, request)
    msg = _webhook_message(double, ix, request.match_info["message_id"])
    channel = double.store.channel(int(msg["channel_id"]))
    assert channel is not None
    body, parts = await read_body(request, double.upload_limit)
    validate_content(body, parts, creating=False)
    by_index, files = double.builder.store_files(channel.id, body, parts)
    double.builder.edit(msg, body, by_index)
    msg["flags"] = int(msg["flags"]) & ~FLAG_LOADING
    double.store.log(
        "interaction_edit",
        channel_id=channel.id,
        message_id=int(msg["id"]),
        message=msg,
        request=body,
        files=files,
        interaction_id=ix.id,
    )
    await events.message_update(double, msg, channel)
    return json_response(msg)


@routes.delete(API + "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
async def delete_webhook_message(request: web.Request) -> web.Response:
    """https://discord.com/developers/docs/interactions/receiving-and-responding#delete-original-interaction-response"""
    double = _double(request)
    ix = _interaction_from_webhook(double, request)
    msg = _webhook_message(double, ix, request.match_info["message_id"])
    channel = double.store.channel(int(msg["channel_id"]))
    assert channel is not None
    double.delete_message(msg)
    double.store.log(
        "interaction_delete", channel_id=channel.id, message_id=int(msg["id"]), message=msg, interaction_id=ix.id
    )
    await events.message_delete(double, msg, channel)
    return web.Response(status=204)
