"""Messages: reading what the bot sends (JSON or multipart with files), validating it the way
Discord does, and building / editing message objects.

Docs: https://discord.com/developers/docs/resources/message#create-message
      https://discord.com/developers/docs/resources/message#edit-message
      https://discord.com/developers/docs/reference#uploading-files
      https://discord.com/developers/docs/resources/message#message-object
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import errors
from .errors import DiscordError, form_error
from .snowflakes import iso
from .state import FLAG_EPHEMERAL, FLAG_LOADING, Channel, StoredFile, User

if TYPE_CHECKING:
    from .server import DiscordDouble

MAX_CONTENT = 2000
_FILE_FIELD = re.compile(r"^(?:files\[(\d+)\]|file(\d*))$")


@dataclass
class UploadPart:
    index: int
    filename: str
    data: bytes
    content_type: str | None


async def read_body(request: web.Request, upload_limit: int) -> tuple[dict[str, Any], list[UploadPart]]:
    """JSON body, or multipart/form-data with ``payload_json`` and ``files[n]`` parts.
    https://discord.com/developers/docs/reference#uploading-files"""
    ctype = request.content_type
    if ctype == "multipart/form-data":
        payload: dict[str, Any] = {}
        parts: list[UploadPart] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            name = part.name or ""
            if name == "payload_json":
                payload = json.loads(await part.text())
                continue
            m = _FILE_FIELD.match(name)
            if m and part.filename is not None:
                data = bytes(await part.read())
                if len(data) > upload_limit:
                    raise DiscordError(413, errors.REQUEST_TOO_LARGE)
                idx = int(m.group(1) if m.group(1) is not None else (m.group(2) or 0))
                parts.append(UploadPart(idx, part.filename, data, part.headers.get("Content-Type")))
        return payload, parts
    if not request.can_read_body:
        return {}, []
    raw = await request.read()
    if not raw:
        return {}, []
    try:
        return json.loads(raw), []
    except ValueError:
        raise DiscordError(400, (50109, "The request body contains invalid JSON.")) from None


def validate_content(body: dict[str, Any], parts: list[UploadPart], *, creating: bool) -> None:
    content = body.get("content")
    if content is not None and len(content) > MAX_CONTENT:
        raise form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
    if creating and not (
        content or body.get("embeds") or body.get("components") or parts or body.get("sticker_ids") or body.get("poll")
    ):
        raise DiscordError(400, errors.EMPTY_MESSAGE)
    if len(body.get("embeds") or []) > 10:
        raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")


def assign_component_ids(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Discord numbers every component (``id``) when the bot leaves it out.
    https://discord.com/developers/docs/components/reference#anatomy-of-a-component"""
    counter = [0]

    def walk(items: list[dict[str, Any]]) -> None:
        for comp in items:
            counter[0] += 1
            comp.setdefault("id", counter[0])
            walk(comp.get("components") or [])
            for key in ("component", "accessory"):
                if isinstance(comp.get(key), dict):
                    walk([comp[key]])

    walk(components)
    return components


def iter_components(components: list[dict[str, Any]]):
    for comp in components or []:
        yield comp
        yield from iter_components(comp.get("components") or [])
        for key in ("component", "accessory"):
            if isinstance(comp.get(key), dict):
                yield from iter_components([comp[key]])


class MessageBuilder:
    """Creates and edits message payloads in the double's store."""

    def __init__(self, double: DiscordDouble) -> None:
        self.double = double

    def store_files(self, channel_id: int, body: dict[str, Any], parts: list[UploadPart], ephemeral: bool = False):
        """Put uploaded parts on the CDN; returns (new files by upload index, list in upload order).
        ``attachments[].id`` in the JSON refers to the upload index ``n`` of ``files[n]``."""
        meta = {}
        for entry in body.get("attachments") or []:
            try:
                meta[int(entry["id"])] = entry
            except (KeyError, TypeError, ValueError):
                continue
        by_index: dict[int, StoredFile] = {}
        for part in sorted(parts, key=lambda p: p.index):
            entry = meta.get(part.index, {})
            by_index[part.index] = self.double.cdn.put(
                channel_id=channel_id,
                filename=entry.get("filename") or part.filename,
                data=part.data,
                content_type=part.content_type,
                description=entry.get("description"),
                ephemeral=ephemeral,
            )
        return by_index, [by_index[i] for i in sorted(by_index)]

    def create(
        self,
        *,
        channel: Channel,
        author: User,
        content: str = "",
        files: list[StoredFile] = (),
        body: dict[str, Any] | None = None,
        msg_type: int = 0,
        flags: int = 0,
        reference: dict[str, Any] | None = None,
        webhook_id: int | None = None,
        interaction: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        store = self.double.store
        body = body or {}
        msg_id = store.snowflakes.make()
        content = body.get("content", content) or ""
        msg: dict[str, Any] = {
            "id": str(msg_id),
            "channel_id": str(channel.id),
            "author": author.to_payload(),
            "content": content,
            "timestamp": iso(self.double.clock.now()),
            "edited_timestamp": None,
            "tts": bool(body.get("tts", False)),
            "mention_everyone": False,
            "mentions": [u.to_payload() for u in store.mentions_in(content)],
            "mention_roles": [],
            "attachments": [f.to_payload() for f in files],
            "embeds": [_normalise_embed(e) for e in body.get("embeds") or []],
            "pinned": False,
            "type": msg_type,
            "flags": int(body.get("flags", 0)) | flags,
            "components": assign_component_ids(list(body.get("components") or [])),
        }
        if body.get("nonce") is not None:
            msg["nonce"] = body["nonce"]
        if webhook_id is not None:
            msg["webhook_id"] = str(webhook_id)
            msg["application_id"] = str(webhook_id)
        if interaction is not None:
            msg["interaction_metadata"] = interaction
        if reference is not None:
            ref_id = int(reference["message_id"])
            referenced = store.messages.get(ref_id)
            if referenced is None and reference.get("fail_if_not_exists", True):
                raise form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
            msg["type"] = 19 if msg_type == 0 else msg_type  # REPLY
            msg["message_reference"] = {
                "type": 0,
                "message_id": str(ref_id),
                "channel_id": str(reference.get("channel_id") or channel.id),
                **({"guild_id": str(channel.guild_id)} if channel.guild_id else {}),
            }
            msg["referenced_message"] = dict(referenced) if referenced else None
            if referenced:
                msg["referenced_message"].pop("referenced_message", None)
        store.messages[msg_id] = msg
        channel.last_message_id = msg_id
        return msg

    def edit(self, msg: dict[str, Any], body: dict[str, Any], new_files: dict[int, StoredFile]) -> dict[str, Any]:
        """Edit semantics: only fields present change; ``attachments`` (when present) is the full
        list to keep: existing ones by snowflake id, new ones by upload index.
        https://discord.com/developers/docs/resources/message#edit-message"""
        store = self.double.store
        if "content" in body:
            msg["content"] = body["content"] or ""
            msg["mentions"] = [u.to_payload() for u in store.mentions_in(msg["content"])]
        if "embeds" in body:
            msg["embeds"] = [_normalise_embed(e) for e in body["embeds"] or []]
        if "components" in body:
            msg["components"] = assign_component_ids(list(body["components"] or []))
        if "flags" in body and body["flags"] is not None:
            # Only SUPPRESS_EMBEDS (and the v2 components flag) may be changed by an edit.
            keep = int(msg["flags"]) & (FLAG_EPHEMERAL | FLAG_LOADING)
            msg["flags"] = keep | (int(body["flags"]) & ~(FLAG_EPHEMERAL | FLAG_LOADING))
        if "attachments" in body and body["attachments"] is not None:
            existing = {a["id"]: a for a in msg["attachments"]}
            kept: list[dict[str, Any]] = []
            used_new: set[int] = set()
            for entry in body["attachments"]:
                key = str(entry.get("id"))
                if key in existing:
                    kept.append(existing[key])
                elif key.isdigit() and int(key) in new_files:
                    kept.append(new_files[int(key)].to_payload())
                    used_new.add(int(key))
            kept += [f.to_payload() for i, f in sorted(new_files.items()) if i not in used_new]
            msg["attachments"] = kept
        elif new_files:
            msg["attachments"] = msg["attachments"] + [f.to_payload() for _, f in sorted(new_files.items())]
        msg["edited_timestamp"] = iso(self.double.clock.now())
        return msg


def _normalise_embed(embed: dict[str, Any]) -> dict[str, Any]:
    embed = dict(embed)
    embed.setdefault("type", "rich")
    return embed
