"""The engine's job events (docs/engine-api.md), parsed once from the wire into typed values.

The runner matches on these classes; nothing after `parse_event` reads the engine's JSON. The HTTP
stream and the broker's subjects carry the same vocabulary, so both transports yield these.
"""
from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass
from typing import Any


class FinalState(enum.StrEnum):
    """How a job ended at the engine (the engine's final event names)."""

    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Queued:
    position: int | None
    eta_s: float | None = None


@dataclass(frozen=True)
class Started:
    device: str | None = None


@dataclass(frozen=True)
class Progress:
    iteration: int
    total: int
    scale: int | None = None
    """1-based, for people."""
    num_scales: int | None = None
    width: int | None = None
    height: int | None = None
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.iteration / max(1, self.total))


@dataclass(frozen=True)
class Preview:
    image: bytes


@dataclass(frozen=True)
class Notice:
    code: str
    message: str


@dataclass(frozen=True)
class Shutdown:
    """The engine is stopping: ask for the job's outcome again later."""


@dataclass(frozen=True)
class Final:
    state: FinalState
    error_code: str | None = None
    error_message: str | None = None
    run_s: float | None = None


EngineEvent = Queued | Started | Progress | Preview | Notice | Shutdown | Final


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def parse_event(raw: dict[str, Any]) -> EngineEvent | None:
    """One wire event -> a typed event; None for events the bot has no use for (pings, unknown types)."""
    kind = raw.get("type")
    state = raw.get("state")
    if kind in FinalState.__members__.values():
        error = raw.get("error") if isinstance(raw.get("error"), dict) else {}
        return Final(FinalState(kind), error.get("code"), error.get("message"), _float(raw.get("run_s")))
    if kind == "position" or (kind == "status" and state == "queued"):
        return Queued(_int(raw.get("position")), _float(raw.get("eta_s")))
    if kind == "started" or (kind == "status" and state == "running"):
        return Started(raw.get("device"))
    if kind == "progress":
        return Progress(iteration=_int(raw.get("iteration")) or 0, total=_int(raw.get("total")) or 1,
                        scale=_int(raw.get("scale")), num_scales=_int(raw.get("num_scales")),
                        width=_int(raw.get("width")), height=_int(raw.get("height")), eta_s=_float(raw.get("eta_s")))
    if kind == "preview" and isinstance(raw.get("data"), str):
        try:
            return Preview(base64.b64decode(raw["data"], validate=True))
        except (binascii.Error, ValueError):
            return None
    if kind == "notice":
        return Notice(str(raw.get("code", "")), str(raw.get("message", "")))
    if kind == "shutdown":
        return Shutdown()
    return None
