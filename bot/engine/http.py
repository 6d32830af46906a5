"""`EngineClient`: typed calls to the engine's HTTP API (docs/engine-api.md).

One shared `aiohttp.ClientSession` (owned by the bot). Every call retries 429 and 5xx answers and
connection errors with exponential backoff and jitter (honouring `Retry-After`), then raises
`EngineBusy` (429) or `EngineUnavailable` (down / 5xx). One engine: several GPU hosts are the broker's job
(`broker.BrokerEngine`), where workers pull from one queue instead of the bot guessing which engine is free.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..backoff import Backoff
from ..errors import EngineBusy, EngineError, EngineUnavailable, JobLost
from .events import EngineEvent, Final, Shutdown, parse_event

log = logging.getLogger(__name__)

# Tries per call (the first included) before an engine counts as down for this call.
DEFAULT_ATTEMPTS = 4
BACKOFF_BASE_S, BACKOFF_MAX_S = 0.5, 8.0
# Quick calls (status, cancel, presets); the event stream has its own read timeout.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=5)
# The engine sends a ping line after 15 s of silence; three missed pings means the stream is dead.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=45)
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class JobSpec:
    """What the bot asks the engine to do; `requester` is the Discord user id (the engine is fair across it)."""

    requester: str
    content: bytes
    content_name: str
    style: bytes | None = None
    style_name: str | None = None
    preset: str | None = None
    size: int | None = None
    steps: int | None = None
    strength: float | None = None
    preserve_colors: bool = False
    seed: int | None = None
    byte_budget: int | None = None
    key: str | None = None
    """The bot's name for this submission (job id and attempt): the broker de-duplicates on it."""

    def form(self) -> aiohttp.FormData:
        form = aiohttp.FormData()
        form.add_field("content", self.content, filename=self.content_name, content_type="application/octet-stream")
        if self.style is not None:
            form.add_field("style", self.style, filename=self.style_name or "style.png",
                           content_type="application/octet-stream")
        if self.preset:
            form.add_field("preset", self.preset)
        form.add_field("requester", self.requester)
        form.add_field("preserve_colors", "true" if self.preserve_colors else "false")
        for name, value in (("size", self.size), ("steps", self.steps), ("strength", self.strength),
                            ("seed", self.seed), ("byte_budget", self.byte_budget)):
            if value is not None:
                form.add_field(name, str(value))
        return form


@dataclass(frozen=True)
class Submitted:
    engine: str
    job_id: str
    status: dict[str, Any]


class EngineClient:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None = None, *,
                 attempts: int = DEFAULT_ATTEMPTS, backoff: float = BACKOFF_BASE_S,
                 max_backoff: float = BACKOFF_MAX_S) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.urls = [self.url]
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff

    def __repr__(self) -> str:  # never the token
        return f"<EngineClient {self.url}>"

    # -- the low level: one request with retries ---------------------------------------------------------

    async def _request(self, method: str, url: str, *, form: Callable[[], aiohttp.FormData] | None = None,
                       params: dict[str, str] | None = None, attempts: int | None = None,
                       expect: str = "json") -> Any:
        """JSON (or bytes with expect='bytes') of a 2xx answer; EngineError for other 4xx."""
        attempts = attempts or self.attempts
        backoff = Backoff(self.backoff, self.max_backoff)
        last: EngineError | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(backoff.next(last.retry_after if last else None))
            try:
                async with self.session.request(method, url, data=form() if form else None, params=params,
                                                headers=self._headers, timeout=REQUEST_TIMEOUT) as resp:
                    if resp.status < 300:
                        return await (resp.read() if expect == "bytes" else resp.json())
                    error = await _error_of(resp)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                last = EngineUnavailable(f"{method} {url}: {exc!r}")
                log.debug("engine request failed (try %d/%d): %s", attempt + 1, attempts, last.detail)
                continue
            if error.status not in _RETRY_STATUSES:
                raise error
            last = error
            log.debug("engine answered %d %s (try %d/%d)", error.status, error.code, attempt + 1, attempts)
        assert last is not None
        if isinstance(last, EngineBusy | EngineUnavailable):
            raise last
        raise EngineUnavailable(f"{method} {url}: {last.status} {last.code}", retry_after=last.retry_after)

    # -- jobs ---------------------------------------------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> Submitted:
        """POST /v1/jobs; EngineUnavailable or EngineBusy when the engine is down or full."""
        body = await self._request("POST", f"{self.url}/v1/jobs", form=spec.form)
        log.info("job %s submitted to %s for requester %s", body["job_id"], self.url, spec.requester)
        return Submitted(self.url, body["job_id"], body)

    async def status(self, engine: str, job_id: str) -> dict[str, Any]:
        try:
            return await self._request("GET", f"{engine}/v1/jobs/{job_id}")
        except EngineError as exc:
            if exc.status == 404:
                raise JobLost(job_id) from None
            raise

    async def events(self, engine: str, job_id: str, *, preview: int | None = None) -> AsyncIterator[EngineEvent]:
        """The job's events, typed, until its `Final` one. JobLost if the engine does not know the job;
        EngineUnavailable if the engine cannot be reached, is shutting down, or the stream ends early."""
        params = {"preview": str(preview)} if preview else {}
        try:
            async with self.session.get(f"{engine}/v1/jobs/{job_id}/events", params=params, headers=self._headers,
                                        timeout=STREAM_TIMEOUT) as resp:
                if resp.status == 404:
                    raise JobLost(job_id)
                if resp.status >= 300:
                    error = await _error_of(resp)
                    if error.status >= 500:
                        raise EngineUnavailable(f"events: {error.status} {error.code}")
                    raise error
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = parse_event(json.loads(line))
                    if isinstance(event, Shutdown):
                        raise EngineUnavailable("the engine is shutting down")
                    if event is not None:
                        yield event
                    if isinstance(event, Final):
                        return
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError, json.JSONDecodeError) as exc:
            raise EngineUnavailable(f"events of {job_id}: {exc!r}") from None
        raise EngineUnavailable(f"the event stream of {job_id} ended early")

    async def result(self, engine: str, job_id: str, *, max_bytes: int | None = None) -> bytes:
        """The encoded result; with `max_bytes`, the engine re-encodes it to fit (EngineError 413 if it cannot)."""
        params = {"max_bytes": str(max_bytes)} if max_bytes else None
        return await self._request("GET", f"{engine}/v1/jobs/{job_id}/result", params=params, expect="bytes")

    async def cancel(self, engine: str, job_id: str) -> dict[str, Any] | None:
        """Cancel a job; None if it already ended or the engine does not know it."""
        try:
            return await self._request("POST", f"{engine}/v1/jobs/{job_id}/cancel", attempts=2)
        except EngineError as exc:
            if exc.status in (404, 409):
                return None
            raise

    # -- presets ------------------------------------------------------------------------------------------------

    async def presets(self) -> list[str]:
        """Names of the engine's presets (builtins and the presets directory)."""
        body = await self._request("GET", f"{self.url}/v1/presets", attempts=2)
        return sorted(p["name"] for p in body.get("presets", []))

    async def preset_image(self, name: str, side: int = 128) -> bytes | None:
        """A thumbnail of a global preset, if the engine serves one (GET /v1/presets/{name}/image)."""
        try:
            return await self._request("GET", f"{self.url}/v1/presets/{name}/image", params={"size": str(side)},
                                       attempts=1, expect="bytes")
        except EngineError:
            return None

    async def ready(self) -> bool:
        """Whether the engine answers /readyz with 200."""
        try:
            async with self.session.get(f"{self.url}/readyz", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


async def _error_of(resp: aiohttp.ClientResponse) -> EngineError:
    """The engine's JSON error body as an EngineError (EngineBusy for 429, EngineUnavailable for 5xx)."""
    try:
        body = await resp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        body = None
    error = body.get("error", {}) if isinstance(body, dict) else {}
    if not isinstance(error, dict):
        error = {}
    retry_after = _retry_after(resp.headers.get("Retry-After"))
    code = str(error.get("code", f"http_{resp.status}"))
    message = str(error.get("message", f"The style engine answered {resp.status}."))
    if resp.status == 429:
        return EngineBusy(429, code, message, retry_after=retry_after)
    if resp.status >= 500:
        return EngineUnavailable(f"{resp.status} {code}: {message}", retry_after=retry_after)
    suggestions = error.get("suggestions") or ()
    return EngineError(resp.status, code, message, retry_after=retry_after, suggestions=suggestions)


def _retry_after(raw: str | None) -> float | None:
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None
