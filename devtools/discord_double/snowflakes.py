"""Realistic Discord snowflakes.

A snowflake is ``(ms since 2015-01-01T00:00:00Z) << 22 | worker << 17 | process << 12 | increment``.
discord.py derives ``created_at`` of messages and interactions from it, and Discord rejects
interaction callbacks whose token is older than 15 minutes, so every id the double hands out
encodes the double's current time (see :class:`Clock`).

Docs: https://discord.com/developers/docs/reference#snowflakes
"""

from __future__ import annotations

import datetime as dt
import itertools
import time

DISCORD_EPOCH_MS = 1_420_070_400_000


class Clock:
    """The double's notion of "now". Tests can move it forward with :meth:`advance`
    (e.g. to let an interaction token expire) without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        """Unix time in seconds."""
        return time.time() + self.offset

    def now_dt(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now(), dt.UTC)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def snowflake_time(snowflake: int) -> float:
    """Unix time (seconds) encoded in a snowflake."""
    return ((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000.0


def iso(ts: float) -> str:
    """ISO8601 timestamp as Discord writes it, e.g. ``2024-05-01T12:00:00.123000+00:00``."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds")


class SnowflakeFactory:
    """Hands out unique, time-ordered snowflakes."""

    def __init__(self, clock: Clock, *, worker: int = 1, process: int = 0) -> None:
        self._clock = clock
        self._worker = worker & 0x1F
        self._process = process & 0x1F
        self._increment = itertools.count()

    def make(self, at: float | dt.datetime | None = None) -> int:
        """A new snowflake for time ``at`` (unix seconds or aware datetime; default: now)."""
        if at is None:
            ts = self._clock.now()
        elif isinstance(at, dt.datetime):
            ts = at.timestamp()
        else:
            ts = float(at)
        ms = int(ts * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (self._worker << 17) | (self._process << 12) | (next(self._increment) & 0xFFF)
