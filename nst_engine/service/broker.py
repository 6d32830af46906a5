"""GPU workers that pull jobs from the NATS JetStream queue (`python -m nst_engine work`, see work.py).

One puller per device, each wrapping today's `worker.Worker` (its thread, Stylizer, OOM retry, time limit and
progress relay) behind a private one-job queue. A puller fetches one message at a time and, while the job runs:
- tells the broker it is still working (`in_progress`) every third of AckWait, from the event loop, so a worker
  that dies (kill -9, OOM killer, unplugged) stops doing so and the job goes to another worker after AckWait;
- relays the job's events (the HTTP stream's vocabulary) to `nst.events.<id>`;
- at the end uploads the result, writes the final event to KV `final.<id>`, publishes it, and only then acks.
  A worker that dies between the KV write and the ack is harmless: the next one finds `final.<id>` and acks.

Cancel wins every race: the bot sets `cancel.<id>` in KV, then publishes on `nst.cancel.<id>`, then deletes
the queued message. A puller records the job id *before* it reads the KV flag, so a cancel message that comes
after that read finds the id and stops the job.

SIGTERM: the running jobs are stopped and given back (`nak`) at once, marked `released.<id>`, so the next
worker says "restarted" rather than "lost".

MaxDeliver: the delivery that reaches it is not run; it reports the job failed, since every earlier delivery
ended with its worker gone. Without that, the broker would stop delivering the job and nobody would answer.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError, ObjectNotFoundError

from ..core.params import ParamError
from ..core.schedule import scale_sizes
from ..images.codec import ImageError, decode_image, encode_image
from ..images.presets import PresetError, PresetLibrary, UnknownPreset, normalize_name
from .events import FINAL_EVENTS, Event
from .forms import JOB_FIELDS, Form, Upload, job_request
from .handlers import _MARGIN, _MIN_STYLE_SIDE, _decode_shrunk
from .jetstream import (
    CONSUMER,
    FILES_BUCKET,
    JOBS_KV,
    PRESETS_BUCKET,
    STREAM,
    WORKER_HEARTBEAT_S,
    WORKERS_KV,
    BrokerAddress,
    BrokerError,
    cancel_subject,
    connect,
    consumer_config,
    ensure_layout,
    events_subject,
)
from .jobs import Job, JobInputs, JobState, Watcher
from .metrics import EngineMetrics
from .middlewares import ApiError
from .queue import FairQueue
from .settings import EngineSettings
from .worker import StylizerFactory, Worker, WorkerState, default_stylizer_factory, worker_devices

log = logging.getLogger(__name__)

# Wait per fetch request; a stopping worker notices within this.
FETCH_WAIT_S = 2.0
# After the broker refused a fetch (it is down), wait this long before the next one.
FETCH_BACKOFF_S = 1.0
# Largest preview side a job may ask for (the HTTP stream's limit).
MAX_PREVIEW_SIDE = 512
# Text fields a job message may carry: the HTTP form's, minus the files and presets (those are in `styles`).
_FIELDS = JOB_FIELDS - {"content", "style", "preset"}
_CANCELLED = {"code": "cancelled", "message": "The job was cancelled."}
_RELEASED = {"code": "released", "message": "The GPU worker is stopping; the job goes to another worker."}
_INTERNAL = {"code": "internal_error", "message": "Something went wrong in the engine."}


class BadJob(Exception):
    """The job message or its inputs cannot be run: a final 'failed' with this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class JobMessage:
    """What the bot publishes on `nst.jobs.<id>`: object keys and text fields, never pixels."""

    job_id: str
    content: str
    styles: list[dict[str, str]]
    """{"key": object name, "name": file name} for an upload, or {"preset": name}."""
    fields: dict[str, str]
    preview: int = 0

    @classmethod
    def parse(cls, job_id: str, data: bytes) -> JobMessage:
        try:
            body = json.loads(data)
            fields = {str(k): str(v) for k, v in body.get("fields", {}).items() if k in _FIELDS and v is not None}
            styles = [{str(k): str(v) for k, v in s.items()} for s in body["styles"]]
            preview = max(0, min(MAX_PREVIEW_SIDE, int(body.get("preview") or 0)))
            return cls(job_id, str(body["content"]), styles, fields, preview)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadJob("bad_job_message", f"The job message is malformed: {exc!r}.") from None


class Broker:
    """The process's connection: JetStream handles, the buckets, and the cancel subscription."""

    def __init__(self, nc: NATS, settings: EngineSettings) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.settings = settings
        self.pullers: list[Puller] = []

    async def open(self) -> None:
        await ensure_layout(self.js)
        s = self.settings
        await self.js.add_consumer(STREAM, consumer_config(s.broker_ack_wait, s.broker_max_deliver))
        self.files = await self.js.object_store(FILES_BUCKET)
        self.presets = await self.js.object_store(PRESETS_BUCKET)
        self.jobs = await self.js.key_value(JOBS_KV)
        self.workers = await self.js.key_value(WORKERS_KV)
        await self.nc.subscribe(cancel_subject("*"), cb=self._on_cancel)

    async def _on_cancel(self, msg: Msg) -> None:
        job_id = msg.subject.rsplit(".", 1)[-1]
        for puller in self.pullers:
            puller.cancel(job_id)

    async def final_of(self, job_id: str) -> dict[str, Any] | None:
        try:
            entry = await self.jobs.get(f"final.{job_id}")
        except KeyNotFoundError:
            return None
        return json.loads(entry.value) if entry.value else None

    async def flag(self, name: str, job_id: str) -> bool:
        try:
            await self.jobs.get(f"{name}.{job_id}")
        except KeyNotFoundError:
            return False
        return True

    async def publish(self, job_id: str, event: dict[str, Any]) -> None:
        with contextlib.suppress(NatsError):  # events are best effort; the final state is also in KV
            await self.nc.publish(events_subject(job_id), json.dumps(event, separators=(",", ":")).encode())


class Puller:
    """One device: fetch a job, run it on this device's Worker, report, ack."""

    def __init__(self, index: int, device: str, broker: Broker, *, metrics: EngineMetrics,
                 factory: StylizerFactory, library: PresetLibrary) -> None:
        self.index = index
        self.device = device
        self.broker = broker
        self.settings = broker.settings
        self.library = library
        self.name = f"{socket.gethostname()}-{os.getpid()}-{index}"
        self.queue: FairQueue[Job] = FairQueue(1, 1, requester_of=lambda job: job.requester)
        self.worker = Worker(index, device, settings=self.settings, queue=self.queue, metrics=metrics,
                             factory=factory)
        self.metrics = metrics
        self.stopping = False
        self.current_id: str | None = None
        self.current: Job | None = None
        self._cancel_requested = False
        self._preset_cache: dict[tuple[str, str], Any] = {}

    # -- control from outside ------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> None:
        if job_id != self.current_id:
            return
        self._cancel_requested = True
        if self.current is not None:
            self.current.request_cancel(dict(_CANCELLED))

    def stop(self) -> None:
        """SIGTERM: take no new job and give the running one back."""
        self.stopping = True
        if self.current is not None:
            self.current.request_cancel(dict(_RELEASED))

    # -- the loop ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        self.worker.start()
        while self.worker.state is WorkerState.STARTING:
            await asyncio.sleep(0.05)
        if not self.worker.ready:
            raise BrokerError(f"the worker on {self.device} cannot start: {self.worker.error}")
        sub = await self.broker.js.pull_subscribe_bind(durable=CONSUMER, stream=STREAM)
        registry = asyncio.create_task(self._register(), name=f"nst-registry-{self.index}")
        log.info("worker %s pulling jobs on %s", self.name, self.device)
        try:
            while not self.stopping:
                try:
                    msgs = await sub.fetch(1, timeout=FETCH_WAIT_S)
                except NatsTimeout:
                    continue
                except NatsError as exc:  # the broker is down; the client reconnects by itself
                    log.debug("fetch failed: %r", exc)
                    await asyncio.sleep(FETCH_BACKOFF_S)
                    continue
                for msg in msgs:
                    if self.stopping:  # fetched while stopping: straight back to the queue
                        await _quietly(msg.nak())
                        continue
                    await self._handle(msg)
        finally:
            registry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await registry
            with contextlib.suppress(NatsError, TimeoutError):
                await self.broker.workers.delete(self.name)
            await self.worker.stop()

    async def _register(self) -> None:
        """Keep this worker's entry in KV alive (the bot's !queue, ETA and `status` read them)."""
        while True:
            await self._announce()
            await asyncio.sleep(WORKER_HEARTBEAT_S)

    async def _announce(self) -> None:
        entry = {
            "worker": self.name, "host": socket.gethostname(), "pid": os.getpid(), "device": self.device,
            "state": self.worker.state.value, "job_id": self.current_id, "jobs_done": self.worker.jobs_done,
            "avg_job_s": self.metrics.avg_job_seconds, "builtin_presets": list(self.library.builtin_names()),
            # The bot checks uploads against these before it stores them in the broker.
            "max_upload_bytes": self.settings.max_upload_bytes, "max_pixels": self.settings.max_pixels,
            "at": time.time(),
        }
        with contextlib.suppress(NatsError, TimeoutError):
            await self.broker.workers.put(self.name, json.dumps(entry).encode())

    async def _handle(self, msg: Msg) -> None:
        job_id = msg.subject.rsplit(".", 1)[-1]
        # Before the KV flag is read (see the module docstring): a later cancel message finds the id.
        self.current_id, self.current, self._cancel_requested = job_id, None, False
        heartbeat = asyncio.create_task(self._heartbeat(msg), name=f"nst-heartbeat-{job_id}")
        await self._announce()
        try:
            await self._process(msg, job_id)
        except Exception:  # a bug around the job: report it, do not lose the worker
            log.exception("worker %s: error while handling job %s", self.name, job_id)
            with contextlib.suppress(NatsError, TimeoutError):
                await self._finish(msg, job_id, _final(job_id, "failed", _INTERNAL), term=True)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self.current_id, self.current = None, None
            await self._announce()

    async def _heartbeat(self, msg: Msg) -> None:
        interval = self.settings.broker_ack_wait / 3
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(NatsError, TimeoutError):
                await msg.in_progress()

    async def _process(self, msg: Msg, job_id: str) -> None:
        broker = self.broker
        final = await broker.final_of(job_id)
        if final is not None:  # finished by a worker that died before its ack: do not run it twice
            log.info("job %s already finished (%s); dropping the redelivery", job_id, final.get("type"))
            await _quietly(msg.ack_sync())
            return
        if await broker.flag("cancel", job_id) or self._cancel_requested:
            await self._finish(msg, job_id, _final(job_id, "cancelled", _CANCELLED))
            return
        delivered = msg.metadata.num_delivered
        if delivered >= self.settings.broker_max_deliver:
            tries = delivered - 1
            log.warning("job %s: its worker was lost %d times; failing it", job_id, tries)
            await self._finish(msg, job_id, _final(job_id, "failed", {
                "code": "worker_lost",
                "message": f"The GPU worker stopped {tries} times while running this job, so it was not tried "
                           "again. Try a smaller size or other images.",
            }), term=True)
            return
        try:
            message = JobMessage.parse(job_id, msg.data)
            job = await self._build(message)
        except BadJob as exc:
            await self._finish(msg, job_id, _final(job_id, "failed", {"code": exc.code, "message": exc.message}),
                               term=True)
            return
        if self.stopping:  # SIGTERM while the inputs were loading: give the job back before it starts
            await self._release(msg, job_id)
            return
        watcher = job.watch(message.preview)
        self.current = job
        if self._cancel_requested:
            job.request_cancel(dict(_CANCELLED))
        if delivered > 1:
            released = await broker.flag("released", job_id)
            job.add_note("worker_restarted" if released else "worker_lost",
                         "The GPU worker was stopped; restarting on another." if released
                         else "The GPU worker was lost; restarting on another.")
        self.queue.put(job)
        await self._relay(msg, job, watcher)

    async def _relay(self, msg: Msg, job: Job, watcher: Watcher) -> None:
        """Forward the job's events until its final one, then finish (or give the job back)."""
        final: Event | None = None
        while (event := await watcher.next()) is not None:
            if event.type in FINAL_EVENTS:
                final = event
                break
            await self.broker.publish(job.id, event.wire())
        job.unwatch(watcher)
        if job.state is JobState.CANCELLED and (job.cancel_error or {}).get("code") == _RELEASED["code"]:
            await self._release(msg, job.id)
            return
        wire = final.wire() if final is not None else _final(job.id, "failed", _INTERNAL)  # no final: be safe
        if job.result is not None:
            key = f"{job.id}/result"
            result = job.result.data
            await self._persist(lambda: self.broker.files.put(key, result))
            # The bot fetches the result from the object store, not from an engine URL.
            wire["result"] = {k: v for k, v in wire["result"].items() if k != "url"} | {"key": key}
        await self._finish(msg, job.id, wire, term=job.state is not JobState.DONE)

    async def _release(self, msg: Msg, job_id: str) -> None:
        log.info("job %s released by %s (stopping)", job_id, self.name)
        with contextlib.suppress(NatsError, TimeoutError):
            await self.broker.jobs.put(f"released.{job_id}", b"1")
        await self.broker.publish(job_id, {"type": "notice", "job_id": job_id, **_RELEASED})
        await _quietly(msg.nak())

    async def _finish(self, msg: Msg, job_id: str, event: dict[str, Any], *, term: bool = False) -> None:
        """KV first, then the event, then the ack: whatever dies in between, the outcome is not lost."""
        data = json.dumps(event, separators=(",", ":")).encode()
        await self._persist(lambda: self.broker.jobs.put(f"final.{job_id}", data))
        await self.broker.publish(job_id, event)
        # term: a failed job is not redelivered; otherwise a plain ack removes it from the work queue.
        await _quietly(msg.term() if term else msg.ack_sync())
        log.info("job %s %s on %s", job_id, event["type"], self.name)

    async def _persist(self, write: Any) -> None:
        """Retry a write while the broker is away (the heartbeat keeps the job ours meanwhile, up to AckWait)."""
        while True:
            try:
                await write()
                return
            except (NatsError, TimeoutError) as exc:
                if self.stopping:
                    raise
                log.warning("cannot store the outcome of job %s yet (%r); retrying", self.current_id, exc)
                await asyncio.sleep(FETCH_BACKOFF_S)

    # -- inputs -------------------------------------------------------------------------------------------------

    async def _build(self, m: JobMessage) -> Job:
        """Download and decode the inputs, validated exactly as the HTTP form is (forms.job_request)."""
        s = self.settings
        if len(m.styles) > s.max_styles:  # before downloading anything
            raise BadJob("too_many_styles", f"Send at most {s.max_styles} styles.")
        uploads = [st for st in m.styles if "key" in st]
        form = Form(
            files={"content": [Upload("content", await self._download(m.content, "content image"))],
                   "style": [Upload(st.get("name"), await self._download(st["key"], "style image"))
                             for st in uploads]},
            fields={**{k: [v] for k, v in m.fields.items()},
                    "preset": [st.get("preset", "") for st in m.styles if "key" not in st]},
        )
        try:
            req = job_request(form, s)
            content, content_size = await asyncio.to_thread(
                _decode_shrunk, req.content.data, s.max_pixels, "content image", _MARGIN * req.params.size)
            scale_sizes(*content.rgb.size, req.params.size, req.params.scales)  # too thin: fail now
        except ApiError as exc:
            raise BadJob(exc.code, exc.message) from None
        except ImageError as exc:
            raise BadJob(exc.code, exc.message) from None
        except ParamError as exc:
            raise BadJob("invalid_parameter", str(exc)) from None
        styles, keys, labels = [], [], []
        side = max(_MIN_STYLE_SIDE, math.ceil(_MARGIN * req.params.size * req.params.style_scale))
        for i, upload in enumerate(req.style_uploads):
            name = "style image" if len(req.style_uploads) == 1 else f"style image {i + 1}"
            try:
                decoded, _ = await asyncio.to_thread(_decode_shrunk, upload.data, s.max_pixels, name, side)
            except ImageError as exc:
                raise BadJob(exc.code, exc.message) from None
            styles.append(decoded.rgb)
            keys.append(None)
            labels.append(f"upload:{upload.filename or name}")
        for preset in req.presets:
            image, key = await self._preset(preset)
            styles.append(image)
            keys.append(key)
            labels.append(f"preset:{preset.casefold()}")
        job = Job(requester=req.requester, params=req.params, output_format=req.output_format,
                  byte_budget=req.byte_budget, inputs=JobInputs(content.rgb, content.alpha, styles, keys),
                  styles=labels, content_size=content_size, id=m.job_id)
        for code, message in req.notes:
            job.add_note(code, message)
        return job

    async def _download(self, key: str, what: str) -> bytes:
        try:
            result = await self.broker.files.get(key)
        except (ObjectNotFoundError, NotFoundError):
            raise BadJob("input_expired", f"The {what} is no longer stored (it expired); please submit again.") \
                from None
        data = result.data or b""
        if len(data) > self.settings.max_upload_bytes:
            limit = self.settings.max_upload_bytes / (1024 * 1024)
            raise BadJob("file_too_large", f"The {what} is larger than the {limit:g} MiB limit.")
        return data

    async def _preset(self, name: str) -> tuple[Any, str]:
        """A preset from the shared bucket (cached by digest), else one of this worker's own (builtins)."""
        try:
            folded = normalize_name(name)
        except PresetError as exc:
            raise BadJob("invalid_preset_name", str(exc)) from None
        try:
            info = await self.broker.presets.get_info(folded)
        except (ObjectNotFoundError, NotFoundError):
            info = None
        if info is not None and not info.deleted:
            key = (folded, info.digest or "")
            cached = self._preset_cache.get(key)
            if cached is None:
                data = (await self.broker.presets.get(folded)).data or b""
                try:
                    image = await asyncio.to_thread(
                        lambda: decode_image(data, max_pixels=self.settings.max_pixels, name=f"preset {folded!r}").rgb)
                except ImageError as exc:
                    raise BadJob(exc.code, exc.message) from None
                self._preset_cache = {k: v for k, v in self._preset_cache.items() if k[0] != folded}
                cached = self._preset_cache[key] = image
            return cached, f"preset:{folded}:{info.digest}"
        try:
            return await asyncio.to_thread(self.library.resolve, folded)
        except UnknownPreset as exc:
            raise BadJob(exc.code, exc.message) from None
        except (PresetError, ImageError) as exc:
            raise BadJob(getattr(exc, "code", "invalid_preset"), str(exc)) from None


def _final(job_id: str, state: str, error: dict[str, str]) -> dict[str, Any]:
    """A final event for a job that never ran here (the fields a snapshot would have that matter)."""
    return {"type": state, "job_id": job_id, "state": state, "error": dict(error), "result": None}


async def _quietly(coro: Any) -> None:
    """Acks and naks while the broker is down: the message comes back after AckWait, which is what we want."""
    with contextlib.suppress(NatsError, TimeoutError):
        await coro


async def seed_presets(broker: Broker, library: PresetLibrary) -> None:
    """Upload this worker's directory presets that the bucket lacks, so the bot lists them and every worker has them.
    (The generated ones every worker draws itself; their names are in each worker's registry entry.)"""
    try:
        present = {info.name for info in await broker.presets.list(ignore_deletes=True)}
    except NotFoundError:  # an empty bucket
        present = set()
    for info in await asyncio.to_thread(library.list):
        if info.source != "directory" or info.name in present or info.path is None:
            continue
        data = await asyncio.to_thread(lambda p=info.path: encode_image(
            decode_image(p.read_bytes(), max_pixels=library.max_pixels).rgb, "png").data)
        await broker.presets.put(info.name, data)
        log.info("preset %r uploaded to the shared bucket", info.name)


# --- the process ------------------------------------------------------------------------------------------------


def address_of(settings: EngineSettings) -> BrokerAddress:
    assert settings.broker_url is not None
    return BrokerAddress(settings.broker_url, settings.broker_token, settings.broker_user, settings.broker_password,
                         settings.broker_tls_ca)


async def run(settings: EngineSettings, *, stylizer_factory: StylizerFactory | None = None,
              devices: list[str] | None = None) -> int:
    """Connect, then run one puller per device until SIGTERM/SIGINT. Raises BrokerError at start-up."""
    devices = devices or worker_devices(settings.device)
    nc = await connect(address_of(settings), name=f"nst-worker {socket.gethostname()}")
    try:
        broker = Broker(nc, settings)
        await broker.open()
        library = PresetLibrary(settings.presets_dir, max_pixels=settings.max_pixels,
                                max_bytes=settings.max_upload_bytes)
        await seed_presets(broker, library)
        metrics = EngineMetrics(queue_depth=lambda: 0.0, devices=lambda: list(devices))
        factory = stylizer_factory or default_stylizer_factory
        broker.pullers = [Puller(i, d, broker, metrics=metrics, factory=factory, library=library)
                          for i, d in enumerate(devices)]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: [p.stop() for p in broker.pullers])
        results = await asyncio.gather(*(p.run() for p in broker.pullers), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, BrokerError):
                raise error
        if errors and len(errors) == len(results):
            raise errors[0]
        return 0
    finally:
        with contextlib.suppress(NatsError, TimeoutError):
            # Drain flushes the last acks and naks; with the broker away it would only wait for its timeout.
            await (nc.drain() if nc.is_connected else nc.close())
