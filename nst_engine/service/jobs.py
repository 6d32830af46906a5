"""Jobs: the record of one style-transfer request, its state machine, its watchers, and the store.

queued -> running -> done | failed | cancelled | timed_out;  queued -> cancelled | failed;
any finished state -> expired (after the result TTL; the record itself goes one TTL later).

Everything here runs on the event loop. The worker thread only touches a job through
`loop.call_soon_threadsafe(...)`, plus `cancel_event` and `preview_wanted`, which are safe to read there.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ..core.params import StyleParams
from ..images.codec import EncodedImage
from .events import DROPPABLE_EVENTS, Event, EventType

log = logging.getLogger(__name__)

# Events buffered per watcher before the oldest droppable one is discarded.
_WATCHER_BUFFER = 64


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    EXPIRED = "expired"


FINISHED = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT})
TERMINAL = FINISHED | {JobState.EXPIRED}
_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}),
    JobState.DONE: frozenset({JobState.EXPIRED}),
    JobState.FAILED: frozenset({JobState.EXPIRED}),
    JobState.CANCELLED: frozenset({JobState.EXPIRED}),
    JobState.TIMED_OUT: frozenset({JobState.EXPIRED}),
    JobState.EXPIRED: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


class JobNotFound(KeyError):
    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"There is no job {self.job_id!r} (it may have expired)."


@dataclass
class JobInputs:
    """The decoded pictures; dropped as soon as the job finishes."""

    content: Image.Image
    content_alpha: Image.Image | None
    styles: list[Image.Image]
    style_keys: list[str | None]


class Watcher:
    """One reader of a job's events: a small buffer that drops stale progress rather than grow."""

    def __init__(self, preview_side: int = 0) -> None:
        self.preview_side = preview_side
        self._events: deque[Event] = deque()
        self._ready = asyncio.Event()
        self.closed = False

    def push(self, event: Event) -> None:
        if self.closed:
            return
        self._events.append(event)
        if len(self._events) > _WATCHER_BUFFER:
            for i, old in enumerate(self._events):
                if old.type in DROPPABLE_EVENTS:
                    del self._events[i]
                    break
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event; None when closed (and drained) or when `timeout` passed without one."""
        while not self._events:
            if self.closed:
                return None
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        return self._events.popleft()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


@dataclass(eq=False)
class Job:
    requester: str
    params: StyleParams
    output_format: str
    byte_budget: int
    inputs: JobInputs | None
    styles: list[str]
    """What the styles were, for status: 'upload:<file name>' or 'preset:<name>'."""
    content_size: tuple[int, int]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: JobState = JobState.QUEUED
    position: int | None = None
    created_at: float = field(default_factory=time.time)
    queued_mono: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    started_mono: float | None = None
    finished_at: float | None = None
    finished_mono: float | None = None
    device: str | None = None
    progress: dict[str, Any] | None = None
    preview: bytes | None = None
    preview_size: tuple[int, int] | None = None
    result: EncodedImage | None = None
    error: dict[str, Any] | None = None
    notes: list[dict[str, str]] = field(default_factory=list)
    stats: dict[str, Any] | None = None
    """What the optimiser reported: iterations, evaluations, seconds (setup, optimize, encode)."""
    cancel_event: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False
    cancel_error: dict[str, Any] | None = None
    """The error a cancelled job reports (who cancelled it and why)."""
    seq: int = 0
    preview_side: int = 0
    """Largest preview side any watcher asked for (0: nobody wants previews). Read by the worker thread."""
    _watchers: set[Watcher] = field(default_factory=set, repr=False)

    # -- state ----------------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def _move(self, new: JobState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise InvalidTransition(f"job {self.id}: {self.state} -> {new}")
        self.state = new

    def start(self, device: str) -> None:
        self._move(JobState.RUNNING)
        self.position = None
        self.device = device
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self.publish(EventType.STARTED, device=device, queue_wait_s=self.queue_wait)

    def finish(
        self,
        state: JobState,
        *,
        result: EncodedImage | None = None,
        error: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> None:
        assert state in FINISHED
        self._move(state)
        self.position = None
        self.result = result
        self.error = error
        self.stats = stats
        self.finished_at = time.time()
        self.finished_mono = time.monotonic()
        self.inputs = None  # free the pictures now; the result is all that is needed
        self.publish(EventType(state.value), **self.snapshot())
        self._close_watchers()

    def request_cancel(self, error: dict[str, Any]) -> None:
        """Ask a running job's optimiser to stop (within one iteration); the worker records the outcome."""
        if self.cancel_error is None:
            self.cancel_error = error
        self.cancel_event.set()

    def expire(self) -> None:
        self._move(JobState.EXPIRED)
        self.result = None
        self.preview = None
        self.publish(EventType.EXPIRED, **self.snapshot())
        self._close_watchers()

    # -- what happened ----------------------------------------------------------------------------------

    @property
    def queue_wait(self) -> float | None:
        if self.started_mono is None:
            return None
        return round(self.started_mono - self.queued_mono, 3)

    @property
    def run_seconds(self) -> float | None:
        if self.started_mono is None:
            return None
        end = self.finished_mono if self.finished_mono is not None else time.monotonic()
        return round(end - self.started_mono, 3)

    def set_position(self, position: int) -> None:
        if position != self.position:
            self.position = position
            self.publish(EventType.POSITION, position=position)

    def set_progress(self, progress: dict[str, Any]) -> None:
        if self.state is JobState.RUNNING:
            self.progress = progress
            self.publish(EventType.PROGRESS, **progress)

    def set_preview(self, data: bytes, size: tuple[int, int], content_type: str, encoded: str) -> None:
        if self.state is not JobState.RUNNING:
            return
        self.preview, self.preview_size = data, size
        event = self._stamp(EventType.PREVIEW, {"width": size[0], "height": size[1], "content_type": content_type,
                                                "data": encoded})
        for watcher in list(self._watchers):
            if watcher.preview_side:
                watcher.push(event)

    def add_note(self, code: str, message: str) -> None:
        note = {"code": code, "message": message}
        self.notes.append(note)
        self.publish(EventType.NOTICE, **note)

    # -- watchers -----------------------------------------------------------------------------------------

    def watch(self, preview_side: int = 0) -> Watcher:
        watcher = Watcher(preview_side)
        if self.finished:
            watcher.close()
        else:
            self._watchers.add(watcher)
            self._update_preview_side()
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        watcher.close()
        self._update_preview_side()

    def _update_preview_side(self) -> None:
        # A plain int, so the worker thread can read it without touching the set of watchers.
        self.preview_side = max((w.preview_side for w in self._watchers), default=0)

    def _stamp(self, kind: EventType, data: dict[str, Any]) -> Event:
        self.seq += 1
        return Event(kind, self.id, self.seq, data)

    def publish(self, kind: EventType, **data: Any) -> None:
        event = self._stamp(kind, data)
        for watcher in list(self._watchers):
            watcher.push(event)

    def _close_watchers(self) -> None:
        for watcher in list(self._watchers):
            watcher.close()
        self._watchers.clear()
        self.preview_side = 0

    def snapshot(self) -> dict[str, Any]:
        p = self.params
        result = None
        if self.result is not None:
            result = {
                "url": f"/v1/jobs/{self.id}/result",
                "format": self.result.format,
                "content_type": self.result.content_type,
                "bytes": len(self.result.data),
                "width": self.result.size[0],
                "height": self.result.size[1],
            }
        return {
            "job_id": self.id,
            "state": self.state.value,
            "requester": self.requester,
            "position": self.position,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "queue_wait_s": self.queue_wait,
            "run_s": self.run_seconds,
            "device": self.device,
            "params": {
                "size": p.size, "steps": p.steps, "strength": p.strength, "preserve_colors": p.preserve_colors,
                "color_method": p.color_method, "seed": p.seed, "style_scale": p.style_scale,
                "style_blend": list(p.style_blend) if p.style_blend else None,
                "format": self.output_format, "byte_budget": self.byte_budget,
            },
            "styles": list(self.styles),
            "content_size": list(self.content_size),
            "progress": self.progress,
            "result": result,
            "error": self.error,
            "notes": list(self.notes),
            "stats": self.stats,
        }


class JobStore:
    """Every job by id, in memory; expires results after `result_ttl` seconds."""

    def __init__(self, result_ttl: float) -> None:
        self.result_ttl = result_ttl
        self._jobs: dict[str, Job] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self):  # noqa: ANN204 - an iterator over a snapshot
        return iter(list(self._jobs.values()))

    def add(self, job: Job) -> None:
        self._jobs[job.id] = job

    def discard(self, job: Job) -> None:
        self._jobs.pop(job.id, None)

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None

    def running(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.state is JobState.RUNNING]

    def sweep(self, now: float | None = None) -> tuple[int, int]:
        """Expire results older than the TTL and forget expired jobs one TTL later -> (expired, dropped)."""
        now = time.monotonic() if now is None else now
        expired = dropped = 0
        for job in list(self._jobs.values()):
            if job.finished_mono is None:
                continue
            age = now - job.finished_mono
            if job.state in FINISHED and age >= self.result_ttl:
                job.expire()
                expired += 1
            elif job.state is JobState.EXPIRED and age >= 2 * self.result_ttl:
                del self._jobs[job.id]
                dropped += 1
        if expired or dropped:
            log.debug("expired %d results, forgot %d jobs", expired, dropped)
        return expired, dropped

    def close_watchers(self) -> None:
        """Shutdown: end every open event stream with a final 'shutdown' event."""
        for job in list(self._jobs.values()):
            for watcher in list(job._watchers):
                watcher.push(Event(EventType.SHUTDOWN, job.id, job.seq, {"state": job.state.value}))
            job._close_watchers()
