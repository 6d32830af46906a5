"""The NATS JetStream side of the engine that is not about running jobs: names, connecting, the layout.

Torch-free, so `work --help`, bad settings and a wrong broker answer at once. The bot spells the same names in
`bot/engine/broker.py` (it does not import the engine); tests/broker/test_wire.py checks that they agree.

Layout (created by whoever connects first, bot or worker; the same configuration on both sides):
- stream NST_JOBS, subjects `nst.jobs.<job id>`, work-queue retention, on disk: one message per job, keys and
  parameters only; `Nats-Msg-Id` = the bot's job id, so a resubmit within DUPLICATE_WINDOW_S is dropped.
- consumer `nst-workers` (durable, pull, explicit acks; AckWait and MaxDeliver from the worker's settings).
- object store `nst-files`: a job's uploads (`<id>/content`, `<id>/style-<n>`) and its result (`<id>/result`).
- object store `nst-presets`: the global style presets, one PNG per name, shared by every worker.
- KV `nst-jobs`: `final.<id>` (the final event), `cancel.<id>` (a cancel request), `released.<id>` (a worker
  that stopped gave the job back).
- KV `nst-workers`: one entry per live worker, rewritten every WORKER_HEARTBEAT_S; entries expire after
  WORKER_TTL_S, so a dead worker drops out by itself.
- core subjects `nst.events.<id>` (the job's events, the HTTP stream's vocabulary) and `nst.cancel.<id>`.
"""
from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError, NoServersError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BucketNotFoundError, NotFoundError, ServiceUnavailableError

log = logging.getLogger(__name__)

STREAM = "NST_JOBS"
JOB_SUBJECT = "nst.jobs"
CONSUMER = "nst-workers"
EVENTS_SUBJECT = "nst.events"
CANCEL_SUBJECT = "nst.cancel"
FILES_BUCKET = "nst-files"
PRESETS_BUCKET = "nst-presets"
JOBS_KV = "nst-jobs"
WORKERS_KV = "nst-workers"

# A bot that restarts resubmits its unfinished jobs; within this window the broker drops them as duplicates.
DUPLICATE_WINDOW_S = 24 * 3600.0
# Uploads and results are kept this long (a job may wait in the queue, and a result is fetched once).
FILES_TTL_S = 24 * 3600.0
# Final states and cancel flags: long enough for a bot that was down for a day to learn how its jobs ended.
JOBS_TTL_S = 2 * 24 * 3600.0
WORKER_HEARTBEAT_S = 5.0
WORKER_TTL_S = 3 * WORKER_HEARTBEAT_S
# A job message holds keys and parameters only; anything bigger is a bug.
MAX_JOB_MESSAGE_BYTES = 64 * 1024
# Tries of the first connection before start-up gives up with one clear line.
CONNECT_TIMEOUT_S = 5.0


class BrokerError(Exception):
    """One sentence for the admin: why the broker cannot be used."""


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


def job_subject(job_id: str) -> str:
    return f"{JOB_SUBJECT}.{job_id}"


def events_subject(job_id: str) -> str:
    return f"{EVENTS_SUBJECT}.{job_id}"


def cancel_subject(job_id: str) -> str:
    return f"{CANCEL_SUBJECT}.{job_id}"


async def _quiet(exc: Exception) -> None:
    log.debug("broker connection: %r", exc)


async def connect(address: BrokerAddress, *, name: str,
                  on_state: Callable[[str], Awaitable[None]] | None = None) -> NATS:
    """Connect, checking first that the server answers, takes the credentials and has JetStream.

    The first attempt fails fast with a BrokerError; once connected, the client reconnects by itself forever.
    """
    last: list[Exception] = []

    async def remember(exc: Exception) -> None:
        last.append(exc)

    try:
        probe = await nats.connect(**address.connect_options(), name=f"{name} (probe)", max_reconnect_attempts=1,
                                   reconnect_time_wait=0.2, error_cb=remember)
    except (NoServersError, OSError, TimeoutError, NatsError) as exc:
        # The most telling of the tries' errors: under load the last one can be the retry's timeout.
        refused = [e for e in last if "authoriz" in str(e).lower() or "authentic" in str(e).lower()]
        raise BrokerError(_why_not(address, (refused or last or [exc])[-1])) from None
    try:
        await probe.jetstream().account_info()
    except (ServiceUnavailableError, NoRespondersError):
        raise BrokerError(f"the broker at {address.url} does not have JetStream enabled "
                          "(start nats-server with -js, or `jetstream {{}}` in its configuration)") from None
    except (NatsError, TimeoutError) as exc:
        raise BrokerError(f"the broker at {address.url} did not answer JetStream requests: {exc!r}") from None
    finally:
        await probe.close()

    async def disconnected() -> None:
        if nc.is_closed or nc.is_draining:
            return  # our own drain at shutdown
        log.warning("lost the connection to the broker at %s; reconnecting", address.url)
        if on_state is not None:
            await on_state("disconnected")

    async def reconnected() -> None:
        log.info("reconnected to the broker at %s", address.url)
        if on_state is not None:
            await on_state("connected")

    nc = NATS()
    await nc.connect(**address.connect_options(), name=name, max_reconnect_attempts=-1, reconnect_time_wait=1.0,
                     error_cb=_quiet, disconnected_cb=disconnected, reconnected_cb=reconnected)
    return nc


def _why_not(address: BrokerAddress, exc: Exception) -> str:
    text = str(exc).lower()
    if "authorization" in text or "authentication" in text:
        return f"the broker at {address.url} refused the credentials (check ENGINE_BROKER_TOKEN or _USER/_PASSWORD)"
    if isinstance(exc, ssl.SSLError) or "ssl" in text or "tls" in text:
        return f"TLS with the broker at {address.url} failed: {exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing is listening at {address.url} (is the NATS server running?)"
    if isinstance(exc, OSError):
        return f"cannot reach the broker at {address.url}: {exc.strerror or exc}"
    return f"cannot connect to the broker at {address.url}: {exc!r}"


def stream_config() -> StreamConfig:
    return StreamConfig(
        name=STREAM, subjects=[f"{JOB_SUBJECT}.*"], retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW_S, max_msg_size=MAX_JOB_MESSAGE_BYTES,
    )


def consumer_config(ack_wait: float, max_deliver: int) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait, max_deliver=max_deliver,
        filter_subject=f"{JOB_SUBJECT}.*", max_ack_pending=-1,
    )


async def ensure_layout(js: JetStreamContext) -> None:
    """Create the stream and the buckets if they are missing (idempotent; the first client creates them)."""
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(stream_config())
    for bucket, ttl in ((FILES_BUCKET, FILES_TTL_S), (PRESETS_BUCKET, None)):
        try:
            await js.object_store(bucket)
        except (BucketNotFoundError, NotFoundError):
            await js.create_object_store(bucket, config=ObjectStoreConfig(bucket=bucket, ttl=ttl, storage=StorageType.FILE))
    for bucket, ttl in ((JOBS_KV, JOBS_TTL_S), (WORKERS_KV, WORKER_TTL_S)):
        try:
            await js.key_value(bucket)
        except (BucketNotFoundError, NotFoundError):
            await js.create_key_value(config=KeyValueConfig(bucket=bucket, ttl=ttl, storage=StorageType.FILE))
