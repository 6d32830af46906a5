"""`create_app(settings)`: wires settings, job store, fair queue, presets, metrics and workers together.

Each resource has its own cleanup context (teardown runs only if its setup ran). Shutdown
(`on_shutdown`, before the cleanup contexts) stops intake, cancels queued jobs, gives running jobs
`shutdown_grace` seconds, then cancels them and closes the event streams.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from ..images.presets import PresetLibrary
from .handlers import readiness
from .jobs import Job, JobState, JobStore
from .keys import (
    IMAGE_EXECUTOR_KEY,
    JOBS_KEY,
    METRICS_KEY,
    PRESETS_KEY,
    QUEUE_KEY,
    SETTINGS_KEY,
    STYLIZER_FACTORY_KEY,
    WORKERS_KEY,
)
from .metrics import EngineMetrics
from .middlewares import auth_middleware, error_middleware
from .queue import FairQueue
from .routes import setup_routes
from .settings import EngineSettings
from .worker import StylizerFactory, Worker, default_stylizer_factory, worker_devices

log = logging.getLogger(__name__)

# Decoding uploads is CPU work that releases the GIL; two threads keep a burst of submissions moving
# without competing much with the optimiser for the CPU.
IMAGE_THREADS = 2
# After the grace period a cancelled optimiser stops within one iteration; this bounds the wait for it.
CANCEL_WAIT_SECONDS = 60.0
_SHUTDOWN_ERROR = {"code": "engine_shutdown", "message": "The style engine restarted; please submit the job again."}


def create_app(settings: EngineSettings, *, stylizer_factory: StylizerFactory | None = None) -> web.Application:
    """The engine's aiohttp app. `stylizer_factory` (EngineOptions -> Stylizer) is for tests and tools."""
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[SETTINGS_KEY] = settings
    app[STYLIZER_FACTORY_KEY] = stylizer_factory or default_stylizer_factory
    app[JOBS_KEY] = JobStore(settings.result_ttl)
    workers: list[Worker] = []
    app[WORKERS_KEY] = workers
    queue: FairQueue[Job] = FairQueue(
        settings.queue_size,
        settings.max_queued_per_requester,
        requester_of=lambda job: job.requester,
        on_reorder=_publish_positions,
    )
    app[QUEUE_KEY] = queue
    metrics = EngineMetrics(queue_depth=lambda: len(queue), devices=lambda: [w.device for w in workers])
    metrics.ready.set_function(lambda: 1.0 if readiness(app) in ("ready", "degraded") else 0.0)
    app[METRICS_KEY] = metrics
    app[PRESETS_KEY] = PresetLibrary(
        settings.presets_dir, max_pixels=settings.max_pixels, max_bytes=settings.max_upload_bytes
    )
    app.cleanup_ctx.append(_image_executor)
    app.cleanup_ctx.append(_result_sweeper)
    app.cleanup_ctx.append(_workers)
    app.on_shutdown.append(drain)
    setup_routes(app)
    return app


def _publish_positions(order: list[Job]) -> None:
    for position, job in enumerate(order, start=1):
        job.set_position(position)


async def _image_executor(app: web.Application) -> AsyncIterator[None]:
    executor = ThreadPoolExecutor(max_workers=IMAGE_THREADS, thread_name_prefix="nst-image")
    app[IMAGE_EXECUTOR_KEY] = executor
    yield
    executor.shutdown(wait=True)


async def _result_sweeper(app: web.Application) -> AsyncIterator[None]:
    store = app[JOBS_KEY]
    interval = min(60.0, max(0.05, store.result_ttl / 4))

    async def sweep() -> None:
        while True:
            await asyncio.sleep(interval)
            store.sweep()

    task = asyncio.create_task(sweep(), name="nst-result-sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _workers(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    devices = await asyncio.to_thread(worker_devices, settings.device)  # CUDA initialisation can take a while
    workers = app[WORKERS_KEY]
    for index, device in enumerate(devices):
        worker = Worker(index, device, settings=settings, queue=app[QUEUE_KEY], metrics=app[METRICS_KEY],
                        factory=app[STYLIZER_FACTORY_KEY])
        workers.append(worker)
        worker.start()
    log.info("%d worker(s): %s", len(workers), ", ".join(devices))
    yield
    await drain(app)  # no-op if on_shutdown already ran; covers apps torn down without a shutdown
    for worker in workers:
        await worker.stop()


async def drain(app: web.Application) -> int:
    """Stop intake, cancel what is queued, let running jobs finish within the grace period, then cancel them.
    Returns how many of the running jobs finished with a result (0 when it already ran)."""
    queue = app[QUEUE_KEY]
    if queue.closed:
        return 0
    settings = app[SETTINGS_KEY]
    metrics = app[METRICS_KEY]
    left = queue.close()
    for job in left:
        job.finish(JobState.CANCELLED, error=dict(_SHUTDOWN_ERROR))
        metrics.job_finished(JobState.CANCELLED.value, None)
    workers = app[WORKERS_KEY]
    busy = [w for w in workers if w.current is not None]
    running = [w.current for w in busy]
    log.info("shutting down: %d queued job(s) cancelled, %d running", len(left), len(busy))
    if busy:
        finished = await asyncio.gather(*(w.wait_idle(settings.shutdown_grace) for w in busy))
        late = [w for w, ok in zip(busy, finished) if not ok]
        for worker in late:
            worker.cancel_current(dict(_SHUTDOWN_ERROR))
        if late:
            stopped = await asyncio.gather(*(w.wait_idle(CANCEL_WAIT_SECONDS) for w in late))
            if not all(stopped):
                log.error("a running job did not stop within %gs of being cancelled", CANCEL_WAIT_SECONDS)
    app[JOBS_KEY].close_watchers()
    return sum(1 for job in running if job is not None and job.state is JobState.DONE)
