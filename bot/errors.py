"""The UserFacingError family: each carries the one sentence the user sees.

Cogs raise these; the error handlers in `bot/client.py` and the cogs send `message` as is. Anything else is
a bug: logged with its traceback, and the user gets one generic sentence.
"""
from __future__ import annotations

from collections.abc import Sequence


class UserFacingError(Exception):
    """An expected problem; `message` is written for the Discord user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(UserFacingError):
    """The command was used the wrong way; the message ends with how to use it."""


class BadAttachment(UserFacingError):
    """An attachment we cannot use: too large, not an image, not on Discord's CDN, gone."""


class UnknownPreset(UserFacingError):
    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        hint = f" Did you mean {' or '.join(f'`{s}`' for s in suggestions)}?" if suggestions else ""
        super().__init__(f"There is no preset called `{name[:40]}`.{hint} `/presets` lists them all.")
        self.name = name
        self.suggestions = list(suggestions)


class LimitReached(UserFacingError):
    """A per-user or per-guild limit (queue, cooldown, channel allow-list)."""


class NotAllowed(UserFacingError):
    """The user may not do this (e.g. press someone else's buttons)."""


class EngineError(UserFacingError):
    """The engine refused a request (4xx): `code` is its stable error code, `message` its sentence."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: float | None = None,
                 suggestions: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.suggestions = list(suggestions)


class EngineBusy(EngineError):
    """429: the engine's queue (or this requester's share of it) is full; try again after `retry_after`."""


class EngineUnavailable(EngineError):
    """The engine cannot be reached, or answers 5xx: jobs wait until it is back."""

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(503, "engine_unavailable",
                         "The style engine is offline; your job will run when it is back.", retry_after=retry_after)
        self.detail = detail


class JobLost(EngineError):
    """The engine no longer knows the job (it restarted): submit it again."""

    def __init__(self, job_id: str) -> None:
        super().__init__(404, "job_not_found", "The style engine restarted; resubmitting your job.")
        self.job_id = job_id
