"""The job event vocabulary on the wire (the NDJSON stream of docs/engine-api.md, and the broker's subjects).

Events are made typed (`Event`) where they happen, in jobs.py, and become JSON once, in `Event.wire()`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class EventType(enum.StrEnum):
    STATUS = "status"
    """The job's whole status, first on every stream."""
    POSITION = "position"
    STARTED = "started"
    PROGRESS = "progress"
    PREVIEW = "preview"
    NOTICE = "notice"
    PING = "ping"
    """Keeps a quiet stream open."""
    SHUTDOWN = "shutdown"
    """The engine is stopping; the job's outcome must be asked for again later."""
    # Final states: the same names as the job states they report.
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    EXPIRED = "expired"


FINAL_EVENTS = frozenset({EventType.DONE, EventType.FAILED, EventType.CANCELLED, EventType.TIMED_OUT,
                          EventType.EXPIRED})
# Events a slow watcher may miss (a newer one of the same kind follows); the others are never dropped.
DROPPABLE_EVENTS = frozenset({EventType.PROGRESS, EventType.PREVIEW, EventType.POSITION, EventType.PING})


@dataclass(frozen=True)
class Event:
    type: EventType
    job_id: str
    seq: int
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        """The last event of a stream: a final state, or the engine shutting down."""
        return self.type in FINAL_EVENTS or self.type is EventType.SHUTDOWN

    def wire(self) -> dict[str, Any]:
        return {"type": self.type.value, **self.data, "job_id": self.job_id, "seq": self.seq}
