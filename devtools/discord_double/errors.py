"""Discord's JSON error responses.

https://discord.com/developers/docs/reference#error-messages
https://discord.com/developers/docs/topics/opcodes-and-status-codes#json-json-error-codes
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# JSON error codes used by the double (name -> (code, message) as Discord words them).
UNKNOWN_CHANNEL = (10003, "Unknown Channel")
UNKNOWN_GUILD = (10004, "Unknown Guild")
UNKNOWN_MESSAGE = (10008, "Unknown Message")
UNKNOWN_USER = (10013, "Unknown User")
UNKNOWN_EMOJI = (10014, "Unknown Emoji")
UNKNOWN_WEBHOOK = (10015, "Unknown Webhook")
UNKNOWN_COMMAND = (10063, "Unknown application command")
UNKNOWN_INTERACTION = (10062, "Unknown interaction")
UNAUTHORIZED = (0, "401: Unauthorized")
NOT_FOUND = (0, "404: Not Found")
METHOD_NOT_ALLOWED = (0, "405: Method Not Allowed")
REQUEST_TOO_LARGE = (40005, "Request entity too large")
ALREADY_ACKNOWLEDGED = (40060, "Interaction has already been acknowledged.")
CANNOT_EDIT_OTHERS_MESSAGE = (50005, "Cannot edit a message authored by another user")
EMPTY_MESSAGE = (50006, "Cannot send an empty message")
MISSING_PERMISSIONS = (50013, "Missing Permissions")
INVALID_WEBHOOK_TOKEN = (50027, "Invalid Webhook Token")
INVALID_FORM_BODY = (50035, "Invalid Form Body")


class DiscordError(Exception):
    """Raised by a handler; the REST middleware turns it into Discord's error JSON."""

    def __init__(self, status: int, error: tuple[int, str], errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {error[1]} (code {error[0]})")
        self.status = status
        self.code, self.message = error
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


def form_error(path: str, code: str, message: str) -> DiscordError:
    """A 400 Invalid Form Body with one field error, e.g. ``form_error("content", "BASE_TYPE_MAX_LENGTH", ...)``."""
    errors: dict[str, Any] = {}
    node = errors
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = {"_errors": [{"code": code, "message": message}]}
    return DiscordError(400, INVALID_FORM_BODY, errors)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON with ``Content-Type`` exactly ``application/json``: discord.py compares the header
    verbatim (``http.json_or_text``), so aiohttp's default ``; charset=utf-8`` would make it
    treat the body as text."""
    return web.Response(
        status=status, body=json.dumps(data).encode(), content_type="application/json", headers=headers or {}
    )
