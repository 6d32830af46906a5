"""Building the interactions a test user triggers: slash commands (options typed by the
command's synced definition, attachments uploaded to the CDN), autocomplete, component clicks
and modal submissions.

Docs: https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object
      https://discord.com/developers/docs/interactions/application-commands
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import secrets
from typing import TYPE_CHECKING, Any

from .messages import iter_components
from .state import DEFAULT_PERMISSIONS, Channel, InteractionHandle, Role, User

if TYPE_CHECKING:
    from .server import DiscordDouble

# Option types.
# https://discord.com/developers/docs/interactions/application-commands#application-command-object-application-command-option-type
SUB_COMMAND, SUB_COMMAND_GROUP, STRING, INTEGER, BOOLEAN = 1, 2, 3, 4, 5
USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 6, 7, 8, 9, 10, 11


def new_interaction(
    double: DiscordDouble,
    itype: int,
    data: dict[str, Any],
    *,
    user: User,
    channel: Channel,
    message: dict[str, Any] | None = None,
    created_at: float | dt.datetime | None = None,
) -> InteractionHandle:
    """https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object"""
    if isinstance(created_at, dt.datetime):
        created_at = created_at.timestamp()
    iid = double.snowflakes.make(created_at)
    token = "aW50ZXJhY3Rpb246" + base64.urlsafe_b64encode(
        f"{iid}:{secrets.token_urlsafe(48)}".encode()
    ).decode().rstrip("=")
    guild = double.store.guild_of(channel)
    payload: dict[str, Any] = {
        "id": str(iid),
        "application_id": str(double.application_id),
        "type": itype,
        "data": data,
        "token": token,
        "version": 1,
        "channel_id": str(channel.id),
        "channel": channel.to_payload(),
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": double.upload_limit,
    }
    if guild is not None:
        member = guild.members[user.id]
        payload.update(
            guild_id=str(guild.id),
            guild={"id": str(guild.id), "locale": "en-US", "features": []},
            guild_locale="en-US",
            member=member.to_payload(permissions=guild.permissions_for(user.id, channel)),
            app_permissions=str(guild.permissions_for(double.bot_user.id, channel)),
            authorizing_integration_owners={"0": str(guild.id)},
            context=0,
        )
    else:
        payload.update(
            user=user.to_payload(),
            authorizing_integration_owners={"0": "0"},
            context=1,
            app_permissions=str(DEFAULT_PERMISSIONS),
        )
    if message is not None:
        payload["message"] = copy.deepcopy(message)
    ix = InteractionHandle(
        id=iid,
        token=token,
        type=itype,
        payload=payload,
        created_at=double.clock.now() if created_at is None else float(created_at),
        channel_id=channel.id,
        user=user,
        message_id=int(message["id"]) if message else None,
        _store=double.store,
    )
    double.store.interactions[iid] = ix
    return ix


def find_command(double: DiscordDouble, name: str, channel: Channel, ctype: int = 1) -> dict[str, Any]:
    pools = ([double.store.commands.get(channel.guild_id, [])] if channel.guild_id else []) + [
        double.store.commands.get(None, [])
    ]
    for pool in pools:
        for cmd in pool:
            if cmd["name"] == name and cmd["type"] == ctype:
                return cmd
    if double.require_synced_commands:
        known = [c["name"] for pool in pools for c in pool]
        raise LookupError(
            f"the bot has not synced a command named {name!r} (known: {known}); Discord only shows synced "
            "commands: call `await bot.tree.sync()` (e.g. in setup_hook) or `double.register_command(...)`"
        )
    return {"id": str(double.snowflakes.make()), "name": name, "type": ctype, "options": []}


def build_options(
    double: DiscordDouble,
    defs: list[dict[str, Any]],
    values: dict[str, Any],
    channel: Channel,
    resolved: dict[str, Any],
    *,
    focused: str | None = None,
) -> list[dict[str, Any]]:
    """Turn ``{"image": ("a.png", b"..."), "steps": 10}`` into Discord's option payloads
    (+ ``resolved`` data), typed by the command's synced definition."""
    by_name = {d["name"]: d for d in defs}
    unknown = set(values) - set(by_name)
    if unknown:
        raise KeyError(f"no option(s) {sorted(unknown)}; the command has {sorted(by_name)}")
    missing = [d["name"] for d in defs if d.get("required") and d["name"] not in values and d["type"] > 2]
    if missing and focused is None:
        raise ValueError(f"required option(s) {missing} missing (the Discord client would not send this)")
    out = []
    for name, value in values.items():
        otype = by_name[name]["type"]
        opt: dict[str, Any] = {"name": name, "type": otype}
        if name == focused:
            opt.update(value=str(value), focused=True)  # what the user has typed so far
        elif otype == ATTACHMENT:
            (stored,) = double.upload_files(channel, [value], ephemeral=True)
            resolved.setdefault("attachments", {})[str(stored.id)] = stored.to_payload()
            opt["value"] = str(stored.id)
        elif otype in (USER, MENTIONABLE) and isinstance(value, User):
            resolved.setdefault("users", {})[str(value.id)] = value.to_payload()
            member = double.guild.members.get(value.id)
            if member is not None and channel.guild_id:
                resolved.setdefault("members", {})[str(value.id)] = member.to_payload(
                    with_user=False, permissions=double.guild.permissions_for(value.id, channel)
                )
            opt["value"] = str(value.id)
        elif otype == CHANNEL and isinstance(value, Channel):
            resolved.setdefault("channels", {})[str(value.id)] = {
                "id": str(value.id),
                "name": value.name,
                "type": value.type,
                "parent_id": None,
                "permissions": str(double.guild.permissions_for(double.user.id, value)),
                "flags": 0,
            }
            opt["value"] = str(value.id)
        elif otype == ROLE and isinstance(value, Role):
            resolved.setdefault("roles", {})[str(value.id)] = value.to_payload()
            opt["value"] = str(value.id)
        else:
            expected = {STRING: str, INTEGER: int, BOOLEAN: bool, NUMBER: (int, float)}.get(otype)
            if expected is not None and (
                not isinstance(value, expected) or (otype == INTEGER and isinstance(value, bool))
            ):
                raise TypeError(f"option {name!r} (type {otype}) cannot take {value!r}")
            opt["value"] = value
        out.append(opt)
    return out


def command_data(
    double: DiscordDouble, name: str, options: dict[str, Any], channel: Channel, *, focused: str | None = None
) -> dict[str, Any]:
    """``name`` may name a subcommand: ``"style apply"`` or ``"admin style reset"``."""
    words = name.split()
    cmd = find_command(double, words[0], channel)
    resolved: dict[str, Any] = {}
    defs = cmd.get("options") or []
    path: list[dict[str, Any]] = []
    for word in words[1:]:
        sub = next((d for d in defs if d["name"] == word and d["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)), None)
        if sub is None:
            raise LookupError(f"command {words[0]!r} has no subcommand {word!r}")
        path.append({"name": word, "type": sub["type"]})
        defs = sub.get("options") or []
    opts = build_options(double, defs, dict(options or {}), channel, resolved, focused=focused)
    for node in reversed(path):
        node["options"] = opts
        opts = [node]
    data: dict[str, Any] = {"id": cmd["id"], "name": words[0], "type": cmd.get("type", 1), "options": opts}
    if resolved:
        data["resolved"] = resolved
    if "guild_id" in cmd:
        data["guild_id"] = cmd["guild_id"]
    return data


def modal_components(components: list[dict[str, Any]], values: dict[str, Any]) -> list[dict[str, Any]]:
    """The submitted form of a modal: its components, mirrored, with the values filled in.
    https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object-modal-submit-data-structure
    """
    out = []
    for c in components:
        if c["type"] == 1:
            out.append({"type": 1, "id": c.get("id"), "components": modal_components(c.get("components", []), values)})
        elif c["type"] == 18:  # label wrapping one component
            out.append({"type": 18, "id": c.get("id"), "component": modal_components([c["component"]], values)[0]})
        elif c["type"] == 4:  # text input
            value = values.get(c["custom_id"], c.get("value") or "")
            if c.get("required", True) and not value:
                raise ValueError(f"text input {c['custom_id']!r} is required")
            out.append({"type": 4, "id": c.get("id"), "custom_id": c["custom_id"], "value": value})
        elif c["type"] in (3, 5, 6, 7, 8):
            out.append(
                {
                    "type": c["type"],
                    "id": c.get("id"),
                    "custom_id": c["custom_id"],
                    "values": list(values.get(c["custom_id"], [])),
                }
            )
    return out


def find_component(msg: dict[str, Any], custom_id: str) -> dict[str, Any]:
    comps = list(iter_components(msg.get("components", [])))
    for comp in comps:
        if comp.get("custom_id") == custom_id:
            if comp.get("disabled"):
                raise ValueError(f"component {custom_id!r} is disabled; a user cannot use it")
            return comp
    raise LookupError(
        f"message {msg['id']} has no component {custom_id!r}; it has "
        f"{[c.get('custom_id') for c in comps if c.get('custom_id')]}"
    )
