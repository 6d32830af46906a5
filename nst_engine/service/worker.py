"""Workers: one per device, each owning one Stylizer and one thread, taking jobs from the fair queue.

The optimisation and the output encoding run in the worker's own thread; progress comes back to the
event loop through `loop.call_soon_threadsafe`, throttled. Cancelling and the time limit go the other
way through the job's `threading.Event`, which the optimiser checks every iteration.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import functools
import gc
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from PIL import Image

from ..core.devices import (
    DeviceUnavailable,
    device_memory,
    job_memory_bytes,
    peak_memory,
    reset_peak_memory,
    resolve_device,
    side_scale_to_fit,
    why_no_cuda,
)
from ..core.optimize import Cancelled, Progress, StyleResult
from ..core.params import EngineOptions, ParamError, StyleParams
from ..core.pixels import fit_long_side
from ..images.codec import EncodedImage, ImageError, encode_image
from .jobs import Job, JobInputs, JobState
from .metrics import EngineMetrics
from .queue import FairQueue
from .settings import EngineSettings

log = logging.getLogger(__name__)

# After a CUDA out-of-memory error the job is retried once at this fraction of the size (about half the
# pixels, so about half the activation memory).
OOM_RETRY_SCALE = 0.7
# Allocation failures that torch reports as plain RuntimeErrors, not torch.OutOfMemoryError: cuDNN or cuBLAS
# could not get memory for their workspace or handle ("unable to find an engine" is cuDNN's frontend after every
# engine failed to get its workspace; cublasCreate fails with NOT_INITIALIZED when the device is full).
OOM_MARKERS = (
    "out of memory",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_NOT_INITIALIZED",
    "unable to find an engine",
)
# A job the free device memory only fits below this long side is refused rather than shrunk to a thumbnail.
MIN_MEMORY_FIT_SIZE = 64
# Smallest output the optimiser accepts (see pixels.MIN_SIDE / StyleParams).
MIN_SIZE = 16
# Previews are small JPEGs sent inline (base64) in the event stream.
PREVIEW_QUALITY = 80
MAX_PREVIEW_SIDE = 512


class WorkerState(enum.StrEnum):
    """starting -> ready | broken (could not load the model); stopped at shutdown."""

    STARTING = "starting"
    READY = "ready"
    BROKEN = "broken"
    STOPPED = "stopped"


class StylizerLike(Protocol):
    """What a worker needs from `optimize.Stylizer` (tests inject fakes through `stylizer_factory`)."""

    def warm_up(self, params: StyleParams = ...) -> None: ...

    def stylize(
        self,
        content: Image.Image,
        styles: Sequence[Image.Image],
        params: StyleParams = ...,
        *,
        style_keys: Sequence[str | None] | None = None,
        init_image: Image.Image | None = None,
        callback: Callable[[Progress], None] | None = None,
        cancel: Any = None,
    ) -> StyleResult: ...


StylizerFactory = Callable[[EngineOptions], StylizerLike]


def default_stylizer_factory(options: EngineOptions) -> StylizerLike:
    from ..core.optimize import Stylizer

    return Stylizer(options)


def worker_devices(spec: str) -> list[str]:
    """ENGINE_DEVICE -> one device string per worker. Raises DeviceUnavailable for devices not here.

    'auto' may fall back to the CPU (said in the log, with the reason when this PyTorch could use a GPU);
    'cuda' never does: without a visible GPU it raises, saying why the GPU is not visible.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        device = str(resolve_device("auto"))
        if torch.version.cuda is not None:
            _warn_no_gpu(device)
        return [device]
    if spec == "cuda":
        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            raise DeviceUnavailable(f"no GPU is visible: {why_no_cuda()}")
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    devices: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        device = resolve_device(part)
        name = f"cuda:{device.index or 0}" if device.type == "cuda" else str(device)
        if name in devices:
            raise DeviceUnavailable(f"device {name!r} is listed twice in ENGINE_DEVICE")
        devices.append(name)
    if not devices:
        raise DeviceUnavailable("ENGINE_DEVICE names no device")
    return devices


@functools.cache
def _warn_no_gpu(device: str) -> None:
    """Once per process: serve.main and the app both resolve the devices."""
    log.warning("ENGINE_DEVICE=auto: no GPU is visible (%s); running on %s, which is much slower "
                "(set ENGINE_DEVICE=cuda to refuse to start without a GPU)", why_no_cuda(), device)


@dataclass
class Outcome:
    state: JobState
    result: EncodedImage | None = None
    error: dict[str, Any] | None = None
    iterations: int = 0
    optimize_seconds: float = 0.0
    stats: dict[str, Any] | None = None


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is the device running out of memory, however the library said so."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, torch.OutOfMemoryError):
            return True
        if isinstance(current, RuntimeError) and any(marker in str(current) for marker in OOM_MARKERS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


class _ProgressRelay:
    """The optimiser's callback (worker thread): forwards throttled progress and requested previews."""

    def __init__(self, job: Job, loop: asyncio.AbstractEventLoop, interval: float, preview_interval: float) -> None:
        self.job = job
        self.loop = loop
        self.interval = interval
        self.preview_interval = preview_interval
        self.last_sent: float | None = None
        self.last_preview: float | None = None
        self.pending: dict[str, Any] | None = None

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody is listening any more
            self.loop.call_soon_threadsafe(fn, *args)

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        summary = {
            "scale": progress.scale + 1,
            "num_scales": progress.num_scales,
            "iteration": progress.iteration,
            "total": progress.total,
            "elapsed_s": round(progress.elapsed, 3),
            "eta_s": round(progress.eta, 1) if math.isfinite(progress.eta) else None,
            "width": progress.size[0],
            "height": progress.size[1],
            "loss": _finite(progress.losses.get("total")),
        }
        last = progress.iteration >= progress.total
        if self.last_sent is None or last or now - self.last_sent >= self.interval:
            self.last_sent = now
            self.pending = None
            self._post(self.job.set_progress, summary)
        else:
            self.pending = summary
        side = self.job.preview_side
        if side and (self.last_preview is None or now - self.last_preview >= self.preview_interval):
            self.last_preview = now
            self._send_preview(progress, min(side, MAX_PREVIEW_SIDE))

    def _send_preview(self, progress: Progress, side: int) -> None:
        try:
            image = progress.preview(side)
        except RuntimeError as exc:
            log.debug("no preview: %s", exc)
            return
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "JPEG", quality=PREVIEW_QUALITY)
        data = buf.getvalue()
        self._post(self.job.set_preview, data, image.size, "image/jpeg", base64.b64encode(data).decode("ascii"))

    def flush(self) -> None:
        """Send the last progress if throttling held it back."""
        if self.pending is not None:
            self._post(self.job.set_progress, self.pending)
            self.pending = None


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


class Worker:
    def __init__(
        self,
        index: int,
        device: str,
        *,
        settings: EngineSettings,
        queue: FairQueue[Job],
        metrics: EngineMetrics,
        factory: StylizerFactory,
    ) -> None:
        self.index = index
        self.device = device
        self.settings = settings
        self.queue = queue
        self.metrics = metrics
        self.factory = factory
        self.state = WorkerState.STARTING
        self.error: str | None = None
        self.current: Job | None = None
        self.jobs_done = 0
        self.device_name: str | None = None
        """The GPU's name once loaded (None on other devices)."""
        self.precision: str | None = None
        """'fp32' or 'bf16' once loaded: bf16 is refused on GPUs without bf16 tensor cores."""
        self._stylizer: StylizerLike | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"nst-worker-{index}")
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def ready(self) -> bool:
        return self.state is WorkerState.READY

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "device": self.device,
            "device_name": self.device_name,
            "precision": self.precision,
            "state": self.state.value,
            "error": self.error,
            "job_id": self.current.id if self.current else None,
            "jobs_done": self.jobs_done,
        }

    def start(self) -> None:
        self._task = asyncio.create_task(self._main(), name=f"nst-worker-{self.index}")

    async def stop(self) -> None:
        """Cancel the loop (after `wait_idle`/`cancel_current`), then release the thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.state = WorkerState.STOPPED
        await asyncio.to_thread(self._executor.shutdown, wait=True)  # the thread may still be finishing a step

    async def wait_idle(self, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def cancel_current(self, error: dict[str, Any]) -> None:
        job = self.current
        if job is not None:
            log.info("cancelling job %s on %s (%s)", job.id, self.device, error["code"])
            job.request_cancel(error)

    # -- the loop -----------------------------------------------------------------------------------------

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._stylizer = await loop.run_in_executor(self._executor, self._load)
        except Exception as exc:  # a worker that cannot load reports it through /readyz instead of dying silently
            self.state = WorkerState.BROKEN
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("worker %d cannot start on %s", self.index, self.device)
            return
        self.state = WorkerState.READY
        log.info("worker %d ready on %s", self.index, self.device)
        while True:
            job = await self.queue.get()
            if job.finished:  # cancelled between the queue and us
                continue
            self.current = job
            self._idle.clear()
            try:
                await self._run(job)
            except Exception:  # a bug around the job (not in it): fail the job, keep the worker
                log.exception("worker %d: error while handling job %s", self.index, job.id)
                if not job.finished:
                    job.finish(JobState.FAILED, error=_error("internal_error", "Something went wrong in the engine."))
                    self.metrics.job_finished(JobState.FAILED.value, job.run_seconds)
            finally:
                self.current = None
                self._idle.set()

    def _load(self) -> StylizerLike:
        s = self.settings
        options = EngineOptions(
            device=self.device, channels_last=s.channels_last, tf32=s.tf32, bf16=s.bf16, compile=s.compile
        )
        stylizer = self.factory(options)
        # /readyz (the health check) says ready only for a worker that runs where it was asked to.
        in_use = getattr(stylizer, "device", self.device)
        if in_use != self.device:
            raise DeviceUnavailable(f"asked for {self.device} but the model runs on {in_use}")
        if self.device.startswith("cuda"):  # the device answers, not just the weights on it
            torch.ones(8, device=self.device).sum().item()
            self.device_name = torch.cuda.get_device_name(self.device)
        effective = getattr(stylizer, "options", options)
        self.precision = "bf16" if effective.bf16 else "fp32"
        if s.warm_up:
            stylizer.warm_up(StyleParams(size=min(s.default_size, s.max_size)))
        return stylizer

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        inputs = job.inputs
        assert inputs is not None
        job.start(self.device)
        self.metrics.job_started(job.queue_wait or 0.0)
        self.metrics.running.inc()
        timer = loop.call_later(self.settings.job_timeout, self._time_out, job)
        relay = _ProgressRelay(job, loop, self.settings.progress_interval, self.settings.preview_interval)
        future = loop.run_in_executor(self._executor, self._execute, job, inputs, relay)
        try:
            outcome = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The service is stopping under us: stop the optimiser, wait for the thread, record it, go.
            job.cancel_event.set()
            outcome = await asyncio.shield(future)
            self._record(job, outcome)
            raise
        finally:
            timer.cancel()
            self.metrics.running.dec()
        self._record(job, outcome)

    def _time_out(self, job: Job) -> None:
        if job.state is JobState.RUNNING:
            log.warning("job %s hit the %gs time limit", job.id, self.settings.job_timeout)
            job.timed_out = True
            job.cancel_event.set()

    def _record(self, job: Job, outcome: Outcome) -> None:
        if job.state is not JobState.RUNNING:
            return
        job.finish(outcome.state, result=outcome.result, error=outcome.error, stats=outcome.stats)
        self.jobs_done += 1
        self.metrics.job_finished(outcome.state.value, job.run_seconds)
        self.metrics.iterations_done(self.device, outcome.iterations, outcome.optimize_seconds)
        log.info("job %s %s in %.2fs on %s", job.id, outcome.state.value, job.run_seconds or 0.0, self.device)

    # -- in the worker thread -------------------------------------------------------------------------------

    def _execute(self, job: Job, inputs: JobInputs, relay: _ProgressRelay) -> Outcome:
        """Run one job to an Outcome; never raises (one bad job must not take the worker down)."""
        try:
            return self._execute_inner(job, inputs, relay)
        except Exception:
            log.exception("job %s failed unexpectedly", job.id)
            return Outcome(JobState.FAILED, error=_error("internal_error", "Something went wrong in the engine."))
        finally:
            relay.flush()

    def _execute_inner(self, job: Job, inputs: JobInputs, relay: _ProgressRelay) -> Outcome:
        assert self._stylizer is not None
        params = job.params
        result: StyleResult | None = None
        for attempt in (1, 2):
            fitted = self._fit_to_memory(job, params, inputs, relay)
            if isinstance(fitted, Outcome):
                return fitted
            params = fitted
            out_of_memory = False
            reset_peak_memory(self.device)
            try:
                result = self._stylizer.stylize(
                    inputs.content, inputs.styles, params,
                    style_keys=inputs.style_keys, callback=relay, cancel=job.cancel_event,
                )
                break
            except Cancelled:
                return self._cancelled(job)
            except ParamError as exc:
                return Outcome(JobState.FAILED, error=_error("invalid_parameter", str(exc)))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                out_of_memory = True  # handled below, once the exception (and the tensors it holds) is gone
            if out_of_memory:
                self._free_device_memory()
                smaller = max(MIN_SIZE, int(params.size * OOM_RETRY_SCALE))
                if attempt == 2 or smaller >= params.size:
                    return Outcome(JobState.FAILED, error=_error(
                        "out_of_memory",
                        f"The GPU ran out of memory even at {params.size} px; please try a smaller size.",
                    ))
                log.warning("job %s: out of memory at %d px, retrying at %d px", job.id, params.size, smaller)
                self.metrics.oom_retries.inc()
                relay._post(job.add_note, "oom_retry",
                            f"The GPU ran out of memory at {params.size} px; retrying at {smaller} px.")
                params = replace(params, size=smaller)
        assert result is not None
        peak = peak_memory(self.device)
        if peak is not None:
            self.metrics.job_peak_memory.labels(self.device).set(peak)
            width, height = result.scales[-1]
            log.info("job %s: peak device memory %s at %dx%d px (%.0f bytes per pixel)",
                     job.id, _mib(peak), width, height, peak / (width * height))
        t_encode = time.perf_counter()
        try:
            encoded = encode_image(result.image, job.output_format, byte_budget=job.byte_budget,
                                   alpha=inputs.content_alpha)
        except ImageError as exc:
            return Outcome(JobState.FAILED, error=_error(exc.code, exc.message))
        optimize = result.timings.get("optimize", result.timings.get("total", 0.0))
        stats = {
            "iterations": result.iterations,
            "evaluations": getattr(result, "evaluations", None),
            "scales": [list(s) for s in result.scales],
            "setup_s": round(result.timings.get("setup", 0.0), 4),
            "optimize_s": round(optimize, 4),
            "stylize_s": round(result.timings.get("total", optimize), 4),
            "encode_s": round(time.perf_counter() - t_encode, 4),
            "peak_memory_bytes": peak,
        }
        return Outcome(JobState.DONE, result=encoded, iterations=result.iterations, optimize_seconds=optimize,
                       stats=stats)

    def _fit_to_memory(
        self, job: Job, params: StyleParams, inputs: JobInputs, relay: _ProgressRelay
    ) -> StyleParams | Outcome:
        """Shrink a job that cannot fit the device's free memory before it starts (or refuse it), rather than
        finding out by running out of memory half-way through."""
        memory = device_memory(self.device)
        if memory is None:
            return params
        width, height = fit_long_side(*inputs.content.size, params.size)
        pixels = width * height
        style_pixels = int(pixels * params.style_scale**2)
        need = job_memory_bytes(pixels, style_pixels)
        if need <= memory.free:
            return params
        smaller = int(params.size * side_scale_to_fit(memory.free, pixels, style_pixels))
        if smaller < MIN_MEMORY_FIT_SIZE:
            log.warning("job %s: needs about %s, the device has %s free of %s", job.id, _mib(need),
                        _mib(memory.free), _mib(memory.total))
            return Outcome(JobState.FAILED, error=_error(
                "out_of_memory",
                f"The GPU has only {_mib(memory.free)} free right now, too little for this picture; "
                "please try again later.",
            ))
        log.warning("job %s: needs about %s at %d px but %s is free; running at %d px", job.id, _mib(need),
                    params.size, _mib(memory.free), smaller)
        relay._post(job.add_note, "memory_capped",
                    f"The GPU has {_mib(memory.free)} free; size reduced from {params.size} to {smaller} px to fit.")
        return replace(params, size=smaller)

    def _cancelled(self, job: Job) -> Outcome:
        if job.timed_out:
            return Outcome(JobState.TIMED_OUT, error=_error(
                "timed_out", f"The job took longer than the {self.settings.job_timeout:g} s limit and was stopped.",
            ))
        error = job.cancel_error or _error("cancelled", "The job was cancelled.")
        return Outcome(JobState.CANCELLED, error=dict(error))

    def _free_device_memory(self) -> None:
        gc.collect()  # tensors still referenced from the failed step's frames go first
        if self.device.startswith("cuda") and torch.cuda.is_available():
            with torch.cuda.device(self.device):  # empty_cache works on the current device
                torch.cuda.empty_cache()
