"""`Engine`: the one small interface the bot uses to run jobs, whichever transport is behind it.

`http.EngineClient` talks to one engine over HTTP (ENGINE_URLS, or the embedded engine); `broker.BrokerEngine`
publishes to the NATS JetStream queue that GPU workers pull from (ENGINE_BROKER_URL). Both yield the typed
events of `events.py`. `engine` arguments name the engine that holds a job (`Submitted.engine`).
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from .events import EngineEvent
from .http import JobSpec, Submitted


@runtime_checkable
class Engine(Protocol):
    urls: list[str]
    """The `Submitted.engine` values of this transport's jobs: a journaled job naming another engine (an earlier
    embedded engine, or the HTTP engine before the switch to the broker) is resubmitted."""

    async def submit(self, spec: JobSpec) -> Submitted: ...

    async def status(self, engine: str, job_id: str) -> dict[str, Any]: ...

    def events(self, engine: str, job_id: str, *, preview: int | None = None) -> AsyncIterator[EngineEvent]: ...

    async def result(self, engine: str, job_id: str, *, max_bytes: int | None = None) -> bytes: ...

    async def cancel(self, engine: str, job_id: str) -> dict[str, Any] | None: ...

    async def presets(self) -> list[str]: ...

    async def preset_image(self, name: str, side: int = 128) -> bytes | None: ...

    async def ready(self) -> bool: ...
