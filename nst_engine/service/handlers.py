"""Thin HTTP handlers: parse and validate, hand off (queue, store, presets), map domain errors to 4xx.

Pillow work (decoding uploads, loading presets) runs on the app's image executor, never on the loop.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from ..core.schedule import scale_sizes
from ..images.codec import DecodedImage, decode_image, encode_image, reencode, shrink_to
from ..images.presets import UnknownPreset
from .events import Event, EventType
from .forms import (
    FORM_OVERHEAD_BYTES,
    MAX_BYTE_BUDGET,
    MIN_BYTE_BUDGET,
    JobRequest,
    parse_field,
    parse_field_value,
    read_form,
    read_job_request,
)
from .jobs import Job, JobInputs, JobState
from .keys import (
    IMAGE_EXECUTOR_KEY,
    JOBS_KEY,
    METRICS_KEY,
    PRESETS_KEY,
    QUEUE_KEY,
    SETTINGS_KEY,
    WORKERS_KEY,
)
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .middlewares import ApiError
from .queue import QueueClosed, QueueFull, RequesterLimit
from .settings import parse_bool
from .worker import WorkerState

log = logging.getLogger(__name__)
T = TypeVar("T")

# An event-stream line every this many seconds keeps proxies from closing a quiet stream.
HEARTBEAT_SECONDS = 15.0
DEFAULT_PREVIEW_SIDE = 256
# Preset thumbnails are for contact sheets; bigger requests would just re-serve the painting.
PRESET_THUMB_DEFAULT, PRESET_THUMB_MAX = 128, 512



# --- helpers ---------------------------------------------------------------------------------------------


async def _in_thread(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[IMAGE_EXECUTOR_KEY], functools.partial(fn, *args, **kwargs))


def _retry_after(app: web.Application) -> str:
    """Seconds until a queue slot is likely to free up: one average job over the number of workers."""
    avg = app[METRICS_KEY].avg_job_seconds or 30.0
    workers = max(1, sum(1 for w in app[WORKERS_KEY] if w.ready))
    return str(max(1, min(600, math.ceil(avg / workers))))


def _queue_eta(app: web.Application, position: int | None) -> float | None:
    avg = app[METRICS_KEY].avg_job_seconds
    if position is None or avg is None:
        return None
    workers = max(1, sum(1 for w in app[WORKERS_KEY] if w.ready))
    return round(position * avg / workers, 1)


def _check_intake(app: web.Application, requester: str | None = None) -> None:
    queue = app[QUEUE_KEY]
    workers = app[WORKERS_KEY]
    if workers and all(w.state in (WorkerState.BROKEN, WorkerState.STOPPED) for w in workers):
        raise ApiError(503, "engine_unavailable", "The style engine is not available right now; please try later.",
                       headers={"Retry-After": "60"})
    try:
        queue.check(requester if requester is not None else "")
    except QueueClosed:
        raise ApiError(503, "shutting_down", "The style engine is restarting; please try again in a minute.",
                       headers={"Retry-After": "30"}) from None
    except QueueFull:
        raise ApiError(429, "queue_full", "The queue is full right now; please try again in a little while.",
                       headers={"Retry-After": _retry_after(app)}) from None
    except RequesterLimit:
        if requester is not None:
            raise ApiError(429, "too_many_jobs",
                           f"You already have {queue.per_requester} jobs waiting; wait for one to finish.",
                           headers={"Retry-After": _retry_after(app)}) from None


def _job(request: web.Request) -> Job:
    return request.app[JOBS_KEY].get(request.match_info["job_id"])


def _status(app: web.Application, job: Job) -> dict[str, Any]:
    snap = job.snapshot()
    snap["eta_s"] = _queue_eta(app, job.position) if job.state is JobState.QUEUED else (
        (job.progress or {}).get("eta_s") if job.state is JobState.RUNNING else None)
    return snap


# Decoded uploads wait in the queue, so they are shrunk at once to what the job can use: this many times
# the output size (the optimiser resamples them to the exact size later; a 40 MP photo would otherwise hold
# 120 MB per queued job).
_MARGIN = 2
_MIN_STYLE_SIDE = 256


def _decode_shrunk(data: bytes, max_pixels: int, name: str, max_side: int) -> tuple[DecodedImage, tuple[int, int]]:
    """-> (decoded image with its long side at most `max_side`, the size it had in the file)."""
    decoded = decode_image(data, max_pixels=max_pixels, name=name)
    original = decoded.size
    alpha = shrink_to(decoded.alpha, max_side) if decoded.alpha is not None else None
    return DecodedImage(shrink_to(decoded.rgb, max_side), alpha, decoded.format), original


async def _decode_inputs(request: web.Request, req: JobRequest) -> tuple[JobInputs, list[str], tuple[int, int]]:
    """Decode the uploads and resolve the presets (in threads): -> inputs, a label per style, the photo's size."""
    app = request.app
    settings = app[SETTINGS_KEY]
    content, content_size = await _in_thread(
        request, _decode_shrunk, req.content.data, settings.max_pixels, "content image",
        _MARGIN * req.params.size)
    scale_sizes(*content.rgb.size, req.params.size, req.params.scales)  # too thin: ParamError -> 400 now, not later
    styles, keys, labels = [], [], []
    style_side = max(_MIN_STYLE_SIDE, math.ceil(_MARGIN * req.params.size * req.params.style_scale))
    for i, upload in enumerate(req.style_uploads):
        name = "style image" if len(req.style_uploads) == 1 else f"style image {i + 1}"
        decoded, _ = await _in_thread(request, _decode_shrunk, upload.data, settings.max_pixels, name, style_side)
        styles.append(decoded.rgb)
        keys.append(None)
        labels.append(f"upload:{upload.filename or name}")
    for name in req.presets:
        try:
            image, key = await _in_thread(request, app[PRESETS_KEY].resolve, name)
        except UnknownPreset as exc:  # in a job it is a bad request, not a missing resource
            raise ApiError(400, exc.code, exc.message, suggestions=exc.suggestions) from None
        styles.append(image)
        keys.append(key)
        labels.append(f"preset:{name.casefold()}")
    return JobInputs(content.rgb, content.alpha, styles, keys), labels, content_size


# --- jobs ------------------------------------------------------------------------------------------------


async def create_job(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS_KEY]
    _check_intake(app)  # before reading megabytes we would have to refuse anyway
    req = await read_job_request(request, settings)
    _check_intake(app, req.requester)

    inputs, labels, content_size = await _decode_inputs(request, req)
    job = Job(
        requester=req.requester, params=req.params, output_format=req.output_format, byte_budget=req.byte_budget,
        inputs=inputs, styles=labels, content_size=content_size,
    )
    for code, message in req.notes:
        job.add_note(code, message)
    _check_intake(app, req.requester)
    app[JOBS_KEY].add(job)
    try:
        position = app[QUEUE_KEY].put(job)
    except Exception:
        app[JOBS_KEY].discard(job)
        raise
    app[METRICS_KEY].submitted.inc()
    log.info("job %s queued for %s at position %d (%dx%d, %d styles)", job.id, job.requester, position,
             *content_size, req.n_styles)
    body = _status(app, job)
    body["links"] = {
        "self": f"/v1/jobs/{job.id}", "events": f"/v1/jobs/{job.id}/events",
        "result": f"/v1/jobs/{job.id}/result", "cancel": f"/v1/jobs/{job.id}/cancel",
    }
    return web.json_response(body, status=202, headers={"Location": f"/v1/jobs/{job.id}"})


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(_status(request.app, _job(request)))


def _preview_side(request: web.Request) -> int:
    raw = request.query.get("preview", "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return 0
    if raw in ("true", "yes", "on", "1"):
        return DEFAULT_PREVIEW_SIDE
    try:
        side = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", "preview must be true/false or a size in pixels.") from None
    if not 16 <= side <= 512:
        raise ApiError(400, "invalid_parameter", "preview size must be between 16 and 512 pixels.")
    return side


async def job_events(request: web.Request) -> web.StreamResponse:
    """NDJSON: a 'status' line, then position/started/progress/preview/notice lines, then the final state."""
    app = request.app
    job = _job(request)
    watcher = job.watch(_preview_side(request))
    response = web.StreamResponse(headers={
        "Content-Type": "application/x-ndjson", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
    })
    try:
        await response.prepare(request)
        await _write_line(response, Event(EventType.STATUS, job.id, job.seq, _status(app, job)))
        if job.finished:
            await _write_line(response, Event(EventType(job.state.value), job.id, job.seq, job.snapshot()))
        else:
            while (event := await watcher.next(timeout=HEARTBEAT_SECONDS)) is not None or not watcher.closed:
                if event is None:
                    await _write_line(response, Event(EventType.PING, job.id, job.seq))
                    continue
                await _write_line(response, event)
                if event.final:
                    break
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        log.debug("watcher of job %s went away", job.id)
    finally:
        job.unwatch(watcher)
    return response


async def _write_line(response: web.StreamResponse, event: Event) -> None:
    await response.write(json.dumps(event.wire(), separators=(",", ":")).encode() + b"\n")


async def job_result(request: web.Request) -> web.Response:
    job = _job(request)
    if job.state is JobState.EXPIRED:
        raise ApiError(410, "result_expired", "This result has expired; please run the job again.")
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        raise ApiError(409, "not_finished", f"The job is still {job.state.value}.", state=job.state.value)
    if job.result is None:
        message = (job.error or {}).get("message", f"The job ended as {job.state.value}.")
        raise ApiError(409, "no_result", message, state=job.state.value)
    result = job.result
    max_bytes = parse_field_value("max_bytes", request.query.get("max_bytes"), int, "a whole number of bytes")
    if max_bytes is not None and len(result.data) > max_bytes:
        # The client learnt its limit late (a Discord channel refused the upload): the same picture, smaller.
        if not MIN_BYTE_BUDGET <= max_bytes <= MAX_BYTE_BUDGET:
            raise ApiError(400, "invalid_parameter",
                           f"max_bytes must be between {MIN_BYTE_BUDGET} and {MAX_BYTE_BUDGET} bytes.")
        result = await _in_thread(request, reencode, result, max_bytes)
    return web.Response(body=result.data, content_type=result.content_type, headers={
        "Content-Disposition": f'inline; filename="stylized-{job.id[:8]}{result.extension}"',
        "X-Image-Width": str(result.size[0]), "X-Image-Height": str(result.size[1]),
        "Cache-Control": "private, max-age=60",
    })


async def job_preview(request: web.Request) -> web.Response:
    job = _job(request)
    if job.preview is None:
        raise ApiError(404, "no_preview", "There is no preview for this job (yet).")
    return web.Response(body=job.preview, content_type="image/jpeg")


async def cancel_job(request: web.Request) -> web.Response:
    app = request.app
    job = _job(request)
    if job.state is JobState.QUEUED:
        app[QUEUE_KEY].remove(job)
        job.finish(JobState.CANCELLED, error={"code": "cancelled", "message": "The job was cancelled."})
        app[METRICS_KEY].job_finished(JobState.CANCELLED.value, None)
        log.info("job %s cancelled while queued", job.id)
        return web.json_response(_status(app, job))
    if job.state is JobState.RUNNING:
        job.request_cancel({"code": "cancelled", "message": "The job was cancelled."})
        return web.json_response({**_status(app, job), "cancel_requested": True}, status=202)
    if job.state is JobState.CANCELLED:
        return web.json_response(_status(app, job))
    raise ApiError(409, "already_finished", f"The job already ended ({job.state.value}).", state=job.state.value)


async def queue_status(request: web.Request) -> web.Response:
    app = request.app
    queue = app[QUEUE_KEY]
    return web.json_response({
        "accepting": not queue.closed,
        "queued": len(queue),
        "capacity": queue.maxsize,
        "per_requester_limit": queue.per_requester,
        "order": [{"job_id": j.id, "requester": j.requester} for j in queue.order()],
        "running": [{"job_id": j.id, "requester": j.requester, "device": j.device}
                    for j in app[JOBS_KEY].running()],
        "workers": [w.describe() for w in app[WORKERS_KEY]],
        "avg_job_s": app[METRICS_KEY].avg_job_seconds,
    })


# --- presets ------------------------------------------------------------------------------------------------


async def list_presets(request: web.Request) -> web.Response:
    infos = await _in_thread(request, request.app[PRESETS_KEY].list)
    return web.json_response({"presets": [info.as_dict() for info in infos]})


async def add_preset(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    form = await read_form(
        request, file_fields={"image"}, known=frozenset({"name", "image", "replace"}),
        max_file=settings.max_upload_bytes, max_total=settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
    )
    name = form.text("name")
    images = form.files.get("image", [])
    if not name:
        raise ApiError(400, "missing_name", "Give the preset a name.")
    if len(images) != 1:
        raise ApiError(400, "missing_image", "Send exactly one image for the preset.")
    replace = parse_field(form, "replace", parse_bool, "true or false") or False
    info = await _in_thread(request, request.app[PRESETS_KEY].add, name, images[0].data, replace=replace)
    return web.json_response(info.as_dict(), status=201)


async def preset_image(request: web.Request) -> web.Response:
    """A PNG thumbnail of a preset (the bot's contact sheet), at most `size` px on its long side."""
    raw = request.query.get("size", str(PRESET_THUMB_DEFAULT))
    try:
        side = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"size must be a whole number, got {raw[:40]!r}.") from None
    if not 16 <= side <= PRESET_THUMB_MAX:
        raise ApiError(400, "invalid_parameter", f"size must be between 16 and {PRESET_THUMB_MAX}.")
    name = request.match_info["name"]
    library = request.app[PRESETS_KEY]

    def render() -> bytes:
        image = library.load(name).copy()
        image.thumbnail((side, side))
        return encode_image(image, "png").data

    data = await _in_thread(request, render)
    return web.Response(body=data, content_type="image/png")


async def remove_preset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await _in_thread(request, request.app[PRESETS_KEY].remove, name)
    return web.json_response({"removed": name.strip().casefold()})


# --- health and metrics --------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def readiness(app: web.Application) -> str:
    """'ready', 'degraded' (some devices failed to start), 'starting', 'unavailable' or 'shutting_down'."""
    workers = app[WORKERS_KEY]
    if app[QUEUE_KEY].closed:
        return "shutting_down"
    if not workers or any(w.state is WorkerState.STARTING for w in workers):
        return "starting"
    if all(w.ready for w in workers):
        return "ready"
    return "degraded" if any(w.ready for w in workers) else "unavailable"


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    workers = app[WORKERS_KEY]
    body: dict[str, Any] = {"workers": [w.describe() for w in workers]}
    status = readiness(app)
    code = 200 if status in ("ready", "degraded") else 503
    return web.json_response({"status": status, **body}, status=code)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

