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
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..core.params import StyleParams
from ..core.schedule import scale_sizes
from ..images.codec import DecodedImage, decode_image, encode_image, normalize_format, shrink_to
from ..images.presets import UnknownPreset
from .jobs import TERMINAL, Job, JobInputs, JobState
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
from .settings import DEFAULT_BYTE_BUDGET, EngineSettings, parse_bool

log = logging.getLogger(__name__)
T = TypeVar("T")

# Text fields are short; anything longer is a client bug or an attack.
MAX_FIELD_BYTES = 4096
MAX_REQUESTER_LENGTH = 128
# Multipart framing and text fields on top of the files themselves.
FORM_OVERHEAD_BYTES = 1024 * 1024
# The smallest and largest output byte budgets a client may ask for.
MIN_BYTE_BUDGET, MAX_BYTE_BUDGET = 64 * 1024, 1024 * 1024 * 1024
# An event-stream line every this many seconds keeps proxies from closing a quiet stream.
HEARTBEAT_SECONDS = 15.0
DEFAULT_PREVIEW_SIDE = 256
# Preset thumbnails are for contact sheets; bigger requests would just re-serve the painting.
PRESET_THUMB_DEFAULT, PRESET_THUMB_MAX = 128, 512
_READ_CHUNK = 64 * 1024

_JOB_FIELDS = frozenset({
    "content", "style", "preset", "requester", "size", "strength", "preserve_colors", "color_method", "seed",
    "steps", "style_scale", "style_blend", "format", "byte_budget",
})
_FINAL_EVENTS = frozenset(s.value for s in TERMINAL) | {"shutdown"}


# --- reading the form ---------------------------------------------------------------------------------------


@dataclass
class _Upload:
    filename: str | None
    data: bytes


@dataclass
class _Form:
    files: dict[str, list[_Upload]] = field(default_factory=dict)
    fields: dict[str, list[str]] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


async def _read_part(part: BodyPartReader, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "file_too_large", f"The {what} is larger than the {_mib(limit)} limit.")
        chunks.append(chunk)
    return b"".join(chunks)


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"


async def _read_form(request: web.Request, *, file_fields: set[str], known: frozenset[str], max_file: int,
                     max_total: int) -> _Form:
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "expected_multipart", "Send the job as multipart/form-data.")
    if request.content_length is not None and request.content_length > max_total:
        raise ApiError(413, "request_too_large", f"The request is larger than the {_mib(max_total)} limit.")
    form = _Form()
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "bad_multipart", "Nested multipart bodies are not supported.")
            name = part.name or ""
            if name not in known:
                raise ApiError(400, "unknown_field", f"Unknown form field {name[:40]!r}.")
            if name in file_fields:
                what = "content image" if name == "content" else f"{name} image"
                data = await _read_part(part, max_file, what)
                form.files.setdefault(name, []).append(_Upload(part.filename, data))
            else:
                raw = await _read_part(part, MAX_FIELD_BYTES, f"field {name!r}")
                try:
                    form.fields.setdefault(name, []).append(raw.decode("utf-8").strip())
                except UnicodeDecodeError:
                    raise ApiError(400, "invalid_parameter", f"Field {name!r} is not valid UTF-8 text.") from None
    except ApiError:
        raise
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:  # malformed framing
        log.debug("bad multipart body: %r", exc)
        raise ApiError(400, "bad_multipart", "The multipart body is malformed.") from None
    return form


# --- job parameters ----------------------------------------------------------------------------------------


def _parse(form: _Form, name: str, parse: Callable[[str], T], what: str) -> T | None:
    raw = form.text(name)
    if raw is None or raw == "":
        return None
    try:
        value = parse(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be {what}, got {raw[:40]!r}.") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, "invalid_parameter", f"{name} must be a finite number.")
    return value


def _parse_blend(raw: str) -> tuple[float, ...]:
    return tuple(float(x) for x in raw.replace(";", ",").split(",") if x.strip())


@dataclass
class _JobRequest:
    params: StyleParams
    output_format: str
    byte_budget: int
    requester: str
    notes: list[tuple[str, str]]


def _job_request(form: _Form, settings: EngineSettings, n_styles: int) -> _JobRequest:
    notes: list[tuple[str, str]] = []
    size = _parse(form, "size", int, "a whole number of pixels")
    if size is None:
        size = min(settings.default_size, settings.max_size)
    elif size > settings.max_size:
        notes.append(("size_capped", f"Size reduced from {size} to {settings.max_size} px (the engine's limit)."))
        size = settings.max_size
    steps = _parse(form, "steps", int, "a whole number")
    if steps is None:
        steps = min(settings.default_steps, settings.max_steps)
    elif steps > settings.max_steps:
        notes.append(("steps_capped", f"Steps reduced from {steps} to {settings.max_steps} (the engine's limit)."))
        steps = settings.max_steps
    kwargs: dict[str, Any] = {"size": size, "steps": steps}
    for name, parse, what in (
        ("strength", float, "a number from 0 to 10"),
        ("style_scale", float, "a number"),
        ("seed", int, "a whole number"),
        ("preserve_colors", parse_bool, "true or false"),
        ("color_method", str, "'luminance' or 'match'"),
        ("style_blend", _parse_blend, "comma-separated numbers"),
    ):
        value = _parse(form, name, parse, what)
        if value is not None:
            kwargs[name] = value
    blend = kwargs.get("style_blend")
    if blend is not None and len(blend) != n_styles:
        raise ApiError(400, "invalid_parameter",
                       f"style_blend has {len(blend)} weights but there are {n_styles} styles.")
    params = StyleParams(**kwargs)  # ParamError -> 400 invalid_parameter (middleware)
    output_format = normalize_format(form.text("format") or "png")
    budget = _parse(form, "byte_budget", int, "a whole number of bytes")
    budget = DEFAULT_BYTE_BUDGET if budget is None else budget
    if not MIN_BYTE_BUDGET <= budget <= MAX_BYTE_BUDGET:
        raise ApiError(400, "invalid_parameter",
                       f"byte_budget must be between {MIN_BYTE_BUDGET} and {MAX_BYTE_BUDGET} bytes.")
    requester = (form.text("requester") or "anonymous")[:MAX_REQUESTER_LENGTH]
    return _JobRequest(params, output_format, budget, requester, notes)


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
    if workers and all(w.state in ("broken", "stopped") for w in workers):
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


# --- jobs ------------------------------------------------------------------------------------------------


async def create_job(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS_KEY]
    _check_intake(app)  # before reading megabytes we would have to refuse anyway
    form = await _read_form(
        request, file_fields={"content", "style"}, known=_JOB_FIELDS, max_file=settings.max_upload_bytes,
        max_total=settings.max_upload_bytes * (1 + settings.max_styles) + FORM_OVERHEAD_BYTES,
    )
    contents = form.files.get("content", [])
    if len(contents) != 1:
        raise ApiError(400, "missing_content" if not contents else "too_many_content_images",
                       "Send exactly one content image (the photo to stylize).")
    style_files = form.files.get("style", [])
    preset_names = [n for n in form.fields.get("preset", []) if n]
    n_styles = len(style_files) + len(preset_names)
    if n_styles == 0:
        raise ApiError(400, "missing_style", "Send at least one style image or the name of a preset.")
    if n_styles > settings.max_styles:
        raise ApiError(400, "too_many_styles", f"Send at most {settings.max_styles} styles.")
    req = _job_request(form, settings, n_styles)
    _check_intake(app, req.requester)

    content, content_size = await _in_thread(
        request, _decode_shrunk, contents[0].data, settings.max_pixels, "content image",
        _MARGIN * req.params.size)
    scale_sizes(*content.rgb.size, req.params.size, req.params.scales)  # too thin: ParamError -> 400 now, not later
    styles, keys, labels = [], [], []
    style_side = max(_MIN_STYLE_SIDE, math.ceil(_MARGIN * req.params.size * req.params.style_scale))
    for i, upload in enumerate(style_files):
        name = "style image" if len(style_files) == 1 else f"style image {i + 1}"
        decoded, _ = await _in_thread(request, _decode_shrunk, upload.data, settings.max_pixels, name, style_side)
        styles.append(decoded.rgb)
        keys.append(None)
        labels.append(f"upload:{upload.filename or name}")
    for name in preset_names:
        try:
            image, key = await _in_thread(request, app[PRESETS_KEY].resolve, name)
        except UnknownPreset as exc:  # in a job it is a bad request, not a missing resource
            raise ApiError(400, exc.code, exc.message, suggestions=exc.suggestions) from None
        styles.append(image)
        keys.append(key)
        labels.append(f"preset:{name.casefold()}")

    job = Job(
        requester=req.requester, params=req.params, output_format=req.output_format, byte_budget=req.byte_budget,
        inputs=JobInputs(content.rgb, content.alpha, styles, keys), styles=labels, content_size=content_size,
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
             *content_size, n_styles)
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
        await _write_line(response, {"type": "status", "seq": job.seq, **_status(app, job)})
        if job.finished:
            await _write_line(response, {"type": job.state.value, "seq": job.seq, **job.snapshot()})
        else:
            while (event := await watcher.next(timeout=HEARTBEAT_SECONDS)) is not None or not watcher.closed:
                if event is None:
                    await _write_line(response, {"type": "ping", "job_id": job.id})
                    continue
                await _write_line(response, event)
                if event["type"] in _FINAL_EVENTS:
                    break
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        log.debug("watcher of job %s went away", job.id)
    finally:
        job.unwatch(watcher)
    return response


async def _write_line(response: web.StreamResponse, event: dict[str, Any]) -> None:
    await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")


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
    form = await _read_form(
        request, file_fields={"image"}, known=frozenset({"name", "image", "replace"}),
        max_file=settings.max_upload_bytes, max_total=settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
    )
    name = form.text("name")
    images = form.files.get("image", [])
    if not name:
        raise ApiError(400, "missing_name", "Give the preset a name.")
    if len(images) != 1:
        raise ApiError(400, "missing_image", "Send exactly one image for the preset.")
    replace = _parse(form, "replace", parse_bool, "true or false") or False
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
    if not workers or any(w.state == "starting" for w in workers):
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

