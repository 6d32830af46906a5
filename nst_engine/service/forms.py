"""Reading a job (or preset) upload: multipart with per-part byte caps, into a typed `JobRequest`.

Everything here is about the request's shape, not its images: the bytes are decoded later, in a thread
(`handlers.create_job`). Errors are `ApiError`s with specific 4xx codes.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..core.params import StyleParams
from ..images.codec import normalize_format
from .middlewares import ApiError
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
_READ_CHUNK = 64 * 1024

JOB_FIELDS = frozenset({
    "content", "style", "preset", "requester", "size", "strength", "preserve_colors", "color_method", "seed",
    "steps", "style_scale", "style_blend", "format", "byte_budget",
})
# --- reading the form ---------------------------------------------------------------------------------------


@dataclass
class Upload:
    filename: str | None
    data: bytes


@dataclass
class Form:
    files: dict[str, list[Upload]] = field(default_factory=dict)
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


async def read_form(request: web.Request, *, file_fields: set[str], known: frozenset[str], max_file: int,
                     max_total: int) -> Form:
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "expected_multipart", "Send the job as multipart/form-data.")
    if request.content_length is not None and request.content_length > max_total:
        raise ApiError(413, "request_too_large", f"The request is larger than the {_mib(max_total)} limit.")
    form = Form()
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
                form.files.setdefault(name, []).append(Upload(part.filename, data))
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


def parse_field(form: Form, name: str, parse: Callable[[str], T], what: str) -> T | None:
    return parse_field_value(name, form.text(name), parse, what)


def parse_field_value(name: str, raw: str | None, parse: Callable[[str], T], what: str) -> T | None:
    """A form or query value parsed; None when absent or empty; ApiError 400 naming the field when invalid."""
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
class JobRequest:
    """One job as the client sent it: the uploads still undecoded, the parameters validated."""

    content: Upload
    style_uploads: list[Upload]
    presets: list[str]
    params: StyleParams
    output_format: str
    byte_budget: int
    requester: str
    notes: list[tuple[str, str]]
    """(code, message) for each value the engine changed, e.g. a size above its limit."""

    @property
    def n_styles(self) -> int:
        return len(self.style_uploads) + len(self.presets)


async def read_job_request(request: web.Request, settings: EngineSettings) -> JobRequest:
    form = await read_form(
        request, file_fields={"content", "style"}, known=JOB_FIELDS, max_file=settings.max_upload_bytes,
        max_total=settings.max_upload_bytes * (1 + settings.max_styles) + FORM_OVERHEAD_BYTES,
    )
    return job_request(form, settings)


def job_request(form: Form, settings: EngineSettings) -> JobRequest:
    contents = form.files.get("content", [])
    if len(contents) != 1:
        raise ApiError(400, "missing_content" if not contents else "too_many_content_images",
                       "Send exactly one content image (the photo to stylize).")
    style_uploads = form.files.get("style", [])
    presets = [n for n in form.fields.get("preset", []) if n]
    n_styles = len(style_uploads) + len(presets)
    if n_styles == 0:
        raise ApiError(400, "missing_style", "Send at least one style image or the name of a preset.")
    if n_styles > settings.max_styles:
        raise ApiError(400, "too_many_styles", f"Send at most {settings.max_styles} styles.")
    notes: list[tuple[str, str]] = []
    size = parse_field(form, "size", int, "a whole number of pixels")
    if size is None:
        size = min(settings.default_size, settings.max_size)
    elif size > settings.max_size:
        notes.append(("size_capped", f"Size reduced from {size} to {settings.max_size} px (the engine's limit)."))
        size = settings.max_size
    steps = parse_field(form, "steps", int, "a whole number")
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
        value = parse_field(form, name, parse, what)
        if value is not None:
            kwargs[name] = value
    blend = kwargs.get("style_blend")
    if blend is not None and len(blend) != n_styles:
        raise ApiError(400, "invalid_parameter",
                       f"style_blend has {len(blend)} weights but there are {n_styles} styles.")
    params = StyleParams(**kwargs)  # ParamError -> 400 invalid_parameter (middleware)
    output_format = normalize_format(form.text("format") or "png")
    budget = parse_field(form, "byte_budget", int, "a whole number of bytes")
    budget = DEFAULT_BYTE_BUDGET if budget is None else budget
    if not MIN_BYTE_BUDGET <= budget <= MAX_BYTE_BUDGET:
        raise ApiError(400, "invalid_parameter",
                       f"byte_budget must be between {MIN_BYTE_BUDGET} and {MAX_BYTE_BUDGET} bytes.")
    requester = (form.text("requester") or "anonymous")[:MAX_REQUESTER_LENGTH]
    return JobRequest(contents[0], style_uploads, presets, params, output_format, budget, requester, notes)
