"""`BrokerEngine`: the bot's side of the NATS JetStream queue (ENGINE_BROKER_URL), with EngineClient's interface.

A job is published once to the work-queue stream (its key as `Nats-Msg-Id`, so a resubmit after a bot restart
is dropped as a duplicate); its images go to an object-store bucket first, the message carries keys only.
Workers on any machine pull it (`python -m nst_engine work`). The job's events come on `nst.events.<key>` in
the vocabulary of the HTTP stream; its final event is also kept in KV, which is where a bot that restarted or
lost the connection finds it. The engine's side and the layout: nst_engine/service/jetstream.py and broker.py
(the bot does not import the engine; tests/broker/test_wire.py checks that the names agree).
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError, NoServersError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NotFoundError,
    ObjectNotFoundError,
    ServiceUnavailableError,
)
from PIL import Image, UnidentifiedImageError

from ..backoff import Backoff
from ..errors import EngineError, EngineUnavailable, JobLost
from .events import EngineEvent, FinalState, parse_event
from .http import JobSpec, Submitted

log = logging.getLogger(__name__)

# The wire: the same names as nst_engine/service/jetstream.py.
STREAM = "NST_JOBS"
JOB_SUBJECT = "nst.jobs"
CONSUMER = "nst-workers"
EVENTS_SUBJECT = "nst.events"
CANCEL_SUBJECT = "nst.cancel"
FILES_BUCKET = "nst-files"
PRESETS_BUCKET = "nst-presets"
JOBS_KV = "nst-jobs"
WORKERS_KV = "nst-workers"
DUPLICATE_WINDOW_S = 24 * 3600.0
FILES_TTL_S = 24 * 3600.0
JOBS_TTL_S = 2 * 24 * 3600.0
WORKER_TTL_S = 15.0
MAX_JOB_MESSAGE_BYTES = 64 * 1024

ENGINE_NAME = "nats"
FINAL_EVENTS = frozenset(state.value for state in FinalState)
CONNECT_TIMEOUT_S = 5.0
# While following a job: how often the connection, the KV final state and the queue position are checked.
POLL_S = 2.0
# Jobs ahead of one are counted message by message; past this the position is shown as "this many or more".
MAX_COUNTED_AHEAD = 200
# The engine's default limits on uploads (nst_engine/images/codec.py): checked before anything is uploaded, unless
# the live workers announce their own (the smallest wins).
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 40_000_000
ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
ALLOWED_FORMATS_TEXT = "JPEG, PNG, WebP, GIF, BMP or TIFF"


class BrokerRefused(Exception):
    """The broker is there but unusable (credentials, no JetStream): one sentence for the admin."""


@dataclass(frozen=True)
class BrokerAddress:
    url: str
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None

    def connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"servers": [self.url], "connect_timeout": CONNECT_TIMEOUT_S}
        if self.token:
            options["token"] = self.token
        if self.user:
            options["user"], options["password"] = self.user, self.password
        if self.tls_ca is not None:
            options["tls"] = ssl.create_default_context(cafile=str(self.tls_ca))
        return options


def check_image(data: bytes, what: str, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> None:
    """The engine's size, pixel and format checks, before the bytes go to the object store (same messages)."""
    subject = f"The {what}"
    if not data:
        raise EngineError(400, "empty_file", f"{subject} is empty (0 bytes).")
    if len(data) > max_bytes:
        raise EngineError(413, "file_too_large", f"{subject} is larger than the {max_bytes / 2**20:g} MiB limit.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # reads the header only: cheap, and no pixels decoded
                fmt, (width, height) = im.format, im.size
    except Image.DecompressionBombError as exc:  # Pillow's own bomb limit, far above ours; it names the count
        claimed = re.search(r"Image size \((\d+) pixels\)", str(exc))
        detail = f"has {int(claimed.group(1)) / 1e6:.0f} megapixels" if claimed else "has too many pixels"
        raise EngineError(413, "too_many_pixels", f"{subject} {detail}; the limit is {max_pixels / 1e6:g} "
                                                  "megapixels. Please send a smaller image.") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise EngineError(415, "not_an_image", f"{subject} is not an image file I can read; please send a "
                                               f"{ALLOWED_FORMATS_TEXT} image.") from None
    if fmt not in ALLOWED_FORMATS:
        raise EngineError(415, "unsupported_format", f"{subject} is in {fmt} format, which is not supported; "
                                                     f"please send a {ALLOWED_FORMATS_TEXT} image.")
    if width * height > max_pixels:
        raise EngineError(413, "too_many_pixels",
                          f"{subject} is {width}×{height} pixels ({width * height / 1e6:.0f} megapixels); the limit "
                          f"is {max_pixels / 1e6:g} megapixels. Please send a smaller image.")


def _loads(data: bytes | None) -> dict[str, Any] | None:
    try:
        value = json.loads(data) if data else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class BrokerEngine:
    """Jobs through the broker. `engine` arguments (EngineClient's) are accepted and ignored: there is one queue."""

    def __init__(self, address: BrokerAddress, *, preview_side: int = 0, name: str = "nst-bot") -> None:
        self.address = address
        self.preview_side = preview_side
        self.urls = [ENGINE_NAME]
        """Previews are asked for when the job is published: the worker that picks it up cannot be asked later."""
        self.name = name
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._ready = asyncio.Event()
        self._connecting: asyncio.Task[None] | None = None

    def __repr__(self) -> str:  # never the credentials
        return f"<BrokerEngine {self.address.url}>"

    # -- connection ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect. Refused credentials or no JetStream: BrokerRefused. Unreachable: keep trying in the background
        (jobs wait, shown as "the style engine is offline")."""
        try:
            await self._connect()
        except (NoServersError, OSError, TimeoutError) as exc:
            log.warning("the broker at %s is unreachable (%s); jobs wait until it is back", self.address.url,
                        type(exc).__name__)
            self._connecting = asyncio.create_task(self._keep_connecting(), name="nst-broker-connect")

    async def _keep_connecting(self) -> None:
        backoff = Backoff(1.0, 30.0)
        delay = backoff.next()
        while True:
            await asyncio.sleep(delay)
            try:
                await self._connect()
                return
            except (NoServersError, OSError, TimeoutError):
                delay = backoff.next()
            except BrokerRefused as exc:  # the broker came up with other settings: say so, keep trying
                log.error("%s", exc)
                delay = backoff.cap

    async def _connect(self) -> None:
        errors: list[Exception] = []

        async def remember(exc: Exception) -> None:
            errors.append(exc)

        try:
            probe = await nats.connect(**self.address.connect_options(), name=f"{self.name} (probe)",
                                       max_reconnect_attempts=1, reconnect_time_wait=0.2, error_cb=remember)
        except NoServersError:
            # Any of the tries' errors decides: under load the last one can be a timeout of the retry.
            if any("authorization" in str(e).lower() for e in errors):
                raise BrokerRefused(f"the broker at {self.address.url} refused the credentials "
                                    "(check ENGINE_BROKER_TOKEN or ENGINE_BROKER_USER/_PASSWORD)") from None
            tls = next((e for e in errors if isinstance(e, ssl.SSLError)), None)
            if tls is not None:
                raise BrokerRefused(f"TLS with the broker at {self.address.url} failed: {tls}") from None
            raise
        try:
            await probe.jetstream().account_info()
        except (ServiceUnavailableError, NoRespondersError):
            raise BrokerRefused(f"the broker at {self.address.url} does not have JetStream enabled") from None
        finally:
            await probe.close()
        nc = await nats.connect(**self.address.connect_options(), name=self.name, max_reconnect_attempts=-1,
                                reconnect_time_wait=1.0, error_cb=self._on_error,
                                disconnected_cb=self._on_disconnect, reconnected_cb=self._on_reconnect)
        js = nc.jetstream()
        await _ensure_layout(js)
        self._nc, self._js = nc, js
        self._files = await js.object_store(FILES_BUCKET)
        self._presets = await js.object_store(PRESETS_BUCKET)
        self._jobs = await js.key_value(JOBS_KV)
        self._workers = await js.key_value(WORKERS_KV)
        self._ready.set()
        log.info("connected to the broker at %s", self.address.url)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("broker connection: %r", exc)

    async def _on_disconnect(self) -> None:
        if self._nc is None or self._nc.is_closed or self._nc.is_draining:
            return  # our own close()
        log.warning("lost the connection to the broker at %s; reconnecting", self.address.url)

    async def _on_reconnect(self) -> None:
        log.info("reconnected to the broker at %s", self.address.url)

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._nc is not None:
            with contextlib.suppress(NatsError, TimeoutError):
                # Drain flushes what is in flight; with the broker away it would only wait for its timeout.
                await (self._nc.drain() if self._nc.is_connected else self._nc.close())

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def _need(self) -> JetStreamContext:
        if self._js is None or not self.connected:
            raise EngineUnavailable(f"not connected to the broker at {self.address.url}")
        return self._js

    # -- jobs -----------------------------------------------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> Submitted:
        """Upload the images, then publish the job. `spec.key` (the journal's job id and attempt) names the job at
        the broker; the same key again within a day is dropped by the broker as a duplicate."""
        key = spec.key
        if not key:
            raise ValueError("a broker job needs a key (the bot's job id)")
        js = self._need()
        max_bytes, max_pixels = self._limits(await self.workers())
        check_image(spec.content, "content image", max_bytes=max_bytes, max_pixels=max_pixels)
        if spec.style is not None:
            check_image(spec.style, "style image", max_bytes=max_bytes, max_pixels=max_pixels)
        styles: list[dict[str, str]] = []
        try:
            await self._files.put(f"{key}/content", spec.content)
            if spec.style is not None:
                await self._files.put(f"{key}/style-0", spec.style)
                styles.append({"key": f"{key}/style-0", "name": spec.style_name or "style.png"})
            if spec.preset:
                styles.append({"preset": spec.preset})
            fields = {"requester": spec.requester, "preserve_colors": "true" if spec.preserve_colors else "false"}
            for name, value in (("size", spec.size), ("steps", spec.steps), ("strength", spec.strength),
                                ("seed", spec.seed), ("byte_budget", spec.byte_budget)):
                if value is not None:
                    fields[name] = str(value)
            body = {"content": f"{key}/content", "styles": styles, "fields": fields, "preview": self.preview_side}
            ack = await js.publish(f"{JOB_SUBJECT}.{key}", json.dumps(body).encode(),
                                   headers={"Nats-Msg-Id": key})
        except (NatsError, TimeoutError) as exc:
            raise EngineUnavailable(f"submit {key}: {exc!r}") from None
        log.info("job %s published (stream seq %d%s) for requester %s", key, ack.seq,
                 ", a duplicate" if ack.duplicate else "", spec.requester)
        return Submitted(ENGINE_NAME, key, {"job_id": key, "state": "queued", "duplicate": bool(ack.duplicate)})

    async def final(self, job_id: str) -> dict[str, Any] | None:
        """The job's final event if it ended (KV), else None."""
        self._need()
        try:
            entry = await self._jobs.get(f"final.{job_id}")
        except KeyNotFoundError:
            return None
        except (NatsError, TimeoutError) as exc:
            raise EngineUnavailable(f"final state of {job_id}: {exc!r}") from None
        return _loads(entry.value)

    async def position(self, job_id: str) -> int | None:
        """1 = next to run; None if the job is not waiting in the queue (running, finished or unknown)."""
        js = self._need()
        try:
            msg = await js.get_last_msg(STREAM, f"{JOB_SUBJECT}.{job_id}")
        except NotFoundError:
            return None
        except (NatsError, TimeoutError) as exc:
            raise EngineUnavailable(f"position of {job_id}: {exc!r}") from None
        delivered = await self._delivered_seq(js)
        if msg.seq is None or msg.seq <= delivered:
            return None  # handed to a worker already
        ahead, seq = 0, delivered + 1
        while seq < msg.seq and ahead < MAX_COUNTED_AHEAD:
            try:
                nxt = await js.get_msg(STREAM, seq=seq, subject=f"{JOB_SUBJECT}.*", next=True)
            except NotFoundError:
                break
            if nxt.seq is None or nxt.seq >= msg.seq:
                break
            ahead, seq = ahead + 1, nxt.seq + 1
        return ahead + 1

    async def _delivered_seq(self, js: JetStreamContext) -> int:
        """The stream sequence of the last job handed to a worker (0 before any worker connected)."""
        try:
            info = await js.consumer_info(STREAM, CONSUMER)
        except NotFoundError:
            return 0
        except (NatsError, TimeoutError) as exc:
            raise EngineUnavailable(f"queue: {exc!r}") from None
        return info.delivered.stream_seq if info.delivered and info.delivered.stream_seq else 0

    async def workers(self) -> list[dict[str, Any]]:
        """The live workers (each refreshes its KV entry every few seconds)."""
        self._need()
        try:
            keys = await self._workers.keys()
        except (NoKeysError, NotFoundError):
            return []
        except (NatsError, TimeoutError) as exc:
            raise EngineUnavailable(f"workers: {exc!r}") from None
        found = []
        for k in keys:
            with contextlib.suppress(KeyNotFoundError):
                entry = _loads((await self._workers.get(k)).value)
                if entry is not None and time.time() - float(entry.get("at", 0)) < WORKER_TTL_S:
                    found.append(entry)
        return sorted(found, key=lambda w: str(w.get("worker")))

    async def queue(self) -> dict[str, Any]:
        """For !queue: depth (waiting jobs), running jobs and the live workers."""
        js = self._need()
        try:
            info = await js.consumer_info(STREAM, CONSUMER)
            waiting = info.num_pending or 0
        except NotFoundError:  # no worker has ever connected
            waiting = (await js.stream_info(STREAM)).state.messages
        workers = await self.workers()
        return {"queued": waiting, "workers": workers, "running": [w["job_id"] for w in workers if w.get("job_id")]}

    @staticmethod
    def _limits(workers: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """Upload limits: the strictest of the live workers', else the engine's defaults."""
        sizes = [int(w["max_upload_bytes"]) for w in workers if w.get("max_upload_bytes")]
        pixels = [int(w["max_pixels"]) for w in workers if w.get("max_pixels")]
        return min(sizes, default=MAX_UPLOAD_BYTES), min(pixels, default=MAX_PIXELS)

    def _eta(self, position: int | None, workers: Sequence[dict[str, Any]]) -> float | None:
        averages = [w["avg_job_s"] for w in workers if w.get("avg_job_s")]
        if position is None or not averages or not workers:
            return None
        return round(position * (sum(averages) / len(averages)) / len(workers), 1)

    async def status(self, engine: str, job_id: str) -> dict[str, Any]:
        final = await self.final(job_id)
        if final is not None:
            return final
        position = await self.position(job_id)
        if position is not None:
            workers = await self.workers()
            return {"job_id": job_id, "state": "queued", "position": position,
                    "eta_s": self._eta(position, workers)}
        for worker in await self.workers():
            if worker.get("job_id") == job_id:
                return {"job_id": job_id, "state": "running", "device": worker.get("device")}
        # Not queued, not running, not finished: between a worker's fetch and its first heartbeat, or lost.
        return {"job_id": job_id, "state": "unknown"}

    async def events(self, engine: str, job_id: str, *, preview: int | None = None) -> AsyncIterator[EngineEvent]:
        """The job's events, typed, until its `Final` one (see `wire_events`). `preview` is ignored: previews are
        asked for when the job is published (`preview_side`)."""
        async for raw in self.wire_events(job_id):
            event = parse_event(raw)
            if event is not None:
                yield event

    async def wire_events(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """A 'status' event, then the job's wire events until its final one (from the subject or, if that was
        missed, from KV). EngineUnavailable when the broker connection is lost; JobLost if the job is neither
        queued, running nor finished for longer than a worker's heartbeat could explain."""
        self._need()
        assert self._nc is not None
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def on_event(msg: Any) -> None:
            event = _loads(msg.data)
            if event is not None:
                inbox.put_nowait(event)

        try:  # subscribe first, then read the state: nothing can slip between the two
            sub = await self._nc.subscribe(f"{EVENTS_SUBJECT}.{job_id}", cb=on_event)
        except (NatsError, TimeoutError) as exc:
            raise EngineUnavailable(f"events of {job_id}: {exc!r}") from None
        try:
            status = await self.status(ENGINE_NAME, job_id)
            yield {**status, "type": "status"}
            if status["state"] in FINAL_EVENTS:
                yield status
                return
            unknown_since = time.monotonic() if status["state"] == "unknown" else None
            position = status.get("position")
            while True:
                try:
                    event = await asyncio.wait_for(inbox.get(), POLL_S)
                except TimeoutError:
                    event = None
                if event is not None:
                    if event.get("type") == "started":
                        position, unknown_since = None, None
                    yield event
                    if event.get("type") in FINAL_EVENTS:
                        return
                    continue
                if not self.connected:
                    raise EngineUnavailable("the connection to the broker was lost")
                final = await self.final(job_id)
                if final is not None:  # the event went by while we were away
                    yield final
                    return
                if position is not None:
                    now = await self.position(job_id)
                    if now is not None and now != position:
                        position = now
                        yield {"type": "position", "job_id": job_id, "position": now,
                               "eta_s": self._eta(now, await self.workers())}
                    elif now is None:
                        position = None
                if unknown_since is not None and time.monotonic() - unknown_since > 3 * WORKER_TTL_S:
                    if (await self.status(ENGINE_NAME, job_id))["state"] == "unknown":
                        raise JobLost(job_id)
                    unknown_since = None
        finally:
            with contextlib.suppress(NatsError, TimeoutError):
                await sub.unsubscribe()

    async def result(self, engine: str, job_id: str, *, max_bytes: int | None = None) -> bytes:
        """The result the worker encoded to the job's byte budget. A smaller `max_bytes` cannot be met here (the
        workers encode; the bot does not): EngineError 413."""
        self._need()
        try:
            result = await self._files.get(f"{job_id}/result")
        except (ObjectNotFoundError, NotFoundError):
            raise EngineError(410, "result_expired", "This result has expired; please run the job again.") from None
        except (NatsError, TimeoutError) as exc:
            raise EngineUnavailable(f"result of {job_id}: {exc!r}") from None
        data = result.data or b""
        if max_bytes is not None and len(data) > max_bytes:
            raise EngineError(413, "result_too_large", "The picture is too large for this channel.")
        return data

    async def cancel(self, engine: str, job_id: str) -> dict[str, Any] | None:
        """Cancel: a KV flag (read by a worker at pick-up), a message to the running worker, and deletion of the
        queued message. All three, in this order: a worker that has just fetched the job sees the flag or the
        message. None if the job had already ended otherwise."""
        js = self._need()
        assert self._nc is not None
        try:
            final = await self.final(job_id)
            if final is not None:
                return final if final.get("type") == "cancelled" else None
            await self._jobs.put(f"cancel.{job_id}", b"1")
            await self._nc.publish(f"{CANCEL_SUBJECT}.{job_id}", b"")
            await self._nc.flush()
            with contextlib.suppress(NotFoundError):
                msg = await js.get_last_msg(STREAM, f"{JOB_SUBJECT}.{job_id}")
                if msg.seq is not None:
                    await js.delete_msg(STREAM, msg.seq)
                    # create, not put: a worker that finished the job meanwhile has the last word.
                    with contextlib.suppress(KeyWrongLastSequenceError):
                        await self._jobs.create(f"final.{job_id}", json.dumps(
                            {"type": "cancelled", "job_id": job_id, "state": "cancelled",
                             "error": {"code": "cancelled", "message": "The job was cancelled."}}).encode())
        except (NatsError, TimeoutError) as exc:
            raise EngineUnavailable(f"cancel {job_id}: {exc!r}") from None
        return {"job_id": job_id, "cancel_requested": True}

    # -- presets ---------------------------------------------------------------------------------------------------

    async def presets(self) -> list[str]:
        """The shared bucket's presets plus the generated ones the live workers draw themselves."""
        self._need()
        names: set[str] = set()
        try:
            with contextlib.suppress(NotFoundError):
                names |= {info.name for info in await self._presets.list(ignore_deletes=True)}
        except (NatsError, TimeoutError) as exc:
            raise EngineUnavailable(f"presets: {exc!r}") from None
        for worker in await self.workers():
            names |= {str(n) for n in worker.get("builtin_presets") or ()}
        return sorted(names)

    async def preset_image(self, name: str, side: int = 128) -> bytes | None:
        """A PNG thumbnail of a preset in the shared bucket (builtins are drawn by the workers: None)."""
        if not self.connected:
            return None
        try:
            data = (await self._presets.get(name.strip().casefold())).data or b""
        except (ObjectNotFoundError, NotFoundError, NatsError, TimeoutError):
            return None
        return await asyncio.to_thread(_thumbnail, data, side)

    async def ready(self) -> bool:
        """Connected, and at least one worker alive."""
        if not self.connected:
            return False
        try:
            return bool(await self.workers())
        except EngineError:
            return False


def _thumbnail(data: bytes, side: int) -> bytes | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.thumbnail((side, side))
            out = io.BytesIO()
            im.convert("RGB").save(out, "PNG")
            return out.getvalue()
    except (UnidentifiedImageError, OSError, ValueError):
        return None


async def _ensure_layout(js: JetStreamContext) -> None:
    """The stream and buckets, as the workers create them (whoever comes first)."""
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(StreamConfig(
            name=STREAM, subjects=[f"{JOB_SUBJECT}.*"], retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW_S, max_msg_size=MAX_JOB_MESSAGE_BYTES))
    for bucket, ttl in ((FILES_BUCKET, FILES_TTL_S), (PRESETS_BUCKET, None)):
        try:
            await js.object_store(bucket)
        except (BucketNotFoundError, NotFoundError):
            await js.create_object_store(bucket, config=ObjectStoreConfig(bucket=bucket, ttl=ttl, storage=StorageType.FILE))
    for bucket, kv_ttl in ((JOBS_KV, JOBS_TTL_S), (WORKERS_KV, WORKER_TTL_S)):
        try:
            await js.key_value(bucket)
        except (BucketNotFoundError, NotFoundError):
            await js.create_key_value(config=KeyValueConfig(bucket=bucket, ttl=kv_ttl, storage=StorageType.FILE))
