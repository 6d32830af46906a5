"""Bearer-token auth, and every error as a JSON body: {"error": {"code": ..., "message": ...}}."""
from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from ..core.params import ParamError
from ..images.codec import ImageError
from ..images.presets import PresetError
from .jobs import JobNotFound
from .keys import METRICS_KEY, SETTINGS_KEY

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Health checks answer without a token, so orchestrators and load balancers can probe them.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})

# A request whose client hung up before it was read (nginx's code): answered to nobody, counted apart from errors.
CLIENT_CLOSED_REQUEST, CLIENT_ABORTED = 499, "client_aborted"
# aiohttp's own HTTP errors (unknown route, wrong method, body too large...) -> our stable codes.
_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    413: "request_too_large", 415: "unsupported_media_type", 429: "too_many_requests",
}


class ApiError(Exception):
    """An error the client should see, with a stable code and a sentence a Discord user can read."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                   reason: str | None = None, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status,
                             reason=reason, headers=headers)


def _as_api_error(exc: Exception) -> ApiError | None:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ImageError):
        return ApiError(exc.status, exc.code, exc.message)
    if isinstance(exc, ParamError):
        return ApiError(400, "invalid_parameter", str(exc))
    if isinstance(exc, PresetError):
        extra = {"suggestions": exc.suggestions} if hasattr(exc, "suggestions") else {}
        return ApiError(exc.status, exc.code, exc.message, **extra)
    if isinstance(exc, JobNotFound):
        return ApiError(404, "job_not_found", str(exc))
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        _count_rejection(request, code)
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after", "www-authenticate")}
        return error_response(exc.status, code, message, headers)
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors become a 500 (and a log line)
        if _client_gone(request, exc):
            # Not our fault and nobody reads the answer: a client timeout, a restarted bot, a dropped upload.
            log.info("%s %s: the client hung up before the request was read (%s)", request.method, request.path,
                     type(exc).__name__)
            _count_rejection(request, CLIENT_ABORTED)
            return error_response(CLIENT_CLOSED_REQUEST, CLIENT_ABORTED, "The client closed the connection.",
                                  reason="Client Closed Request")
        api = _as_api_error(exc)
        if api is None:
            log.exception("unhandled error in %s %s", request.method, request.path)
            api = ApiError(500, "internal_error", "Something went wrong in the engine.")
        _count_rejection(request, api.code)
        return error_response(api.status, api.code, api.message, api.headers, **api.extra)


def _client_gone(request: web.Request, exc: Exception) -> bool:
    """Whether `exc` comes from the client hanging up (mid-upload, say) rather than from a bug here."""
    transport = request.transport
    return isinstance(exc, ConnectionResetError) or transport is None or transport.is_closing()


def _count_rejection(request: web.Request, code: str) -> None:
    metrics = request.app.get(METRICS_KEY)
    if metrics is not None:
        metrics.rejected.labels(code).inc()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[SETTINGS_KEY].token
    if token is None or request.path in PUBLIC_PATHS:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    # Constant-time comparison of bytes (compare_digest refuses non-ASCII str).
    supplied_bytes = supplied.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(supplied_bytes, token.encode()):
        # Never log the supplied value: it may be a near-miss of the real token.
        log.info("refused %s %s from %s: %s", request.method, request.path, request.remote,
                 "wrong token" if header else "no token")
        raise ApiError(401, "unauthorized", "A valid engine token is required.",
                       headers={"WWW-Authenticate": 'Bearer realm="nst_engine"'})
    return await handler(request)
