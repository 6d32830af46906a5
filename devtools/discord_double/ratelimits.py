"""Rate limits and REST fault injection.

Every REST response carries Discord's ``X-RateLimit-*`` headers, counted per bucket
(route + major parameters, as Discord does). A bucket allows ``limit`` requests per
``window`` seconds; going over it gets a real 429. The numbers default to small windows so
tests stay fast; the shapes (headers, body, ``Via``) are Discord's.

Faults queued with :meth:`Faults.add` (via ``DiscordDouble.fail_next``) answer the next
matching request(s) with a 429 or a 5xx instead of running the handler.

Docs: https://discord.com/developers/docs/topics/rate-limits
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .errors import json_response
from .snowflakes import Clock

# Discord's API sits behind Google's frontends, and discord.py treats a 429 without a ``Via``
# header as a Cloudflare ban (it raises instead of retrying), so every response carries it.
VIA = "1.1 google"

_VAR = re.compile(r"\{[^}]*\}")


def normalise_template(path: str) -> str:
    """'/channels/{channel_id}/messages' and '/channels/{id}/messages' compare equal."""
    path = path.split("?", 1)[0]
    path = path.removeprefix("/api/v10")
    return _VAR.sub("{}", path.rstrip("/") or "/")


def bucket_hash(method: str, template: str) -> str:
    return hashlib.sha1(f"{method} {normalise_template(template)}".encode()).hexdigest()[:32]


@dataclass
class RateLimitPolicy:
    limit: int = 5
    window: float = 1.0


@dataclass
class _Bucket:
    remaining: int
    resets_at: float


class Buckets:
    def __init__(self, clock: Clock, policy: RateLimitPolicy | None) -> None:
        self.clock = clock
        self.policy = policy
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}

    def hit(self, method: str, template: str, major: str) -> tuple[bool, dict[str, str], float]:
        """Count one request. Returns (allowed, headers, retry_after)."""
        policy = self.policy
        if policy is None:
            return True, {}, 0.0
        now = self.clock.now()
        key = (method, normalise_template(template), major)
        bucket = self._buckets.get(key)
        if bucket is None or now >= bucket.resets_at:
            bucket = self._buckets[key] = _Bucket(policy.limit, now + policy.window)
        reset_after = max(bucket.resets_at - now, 0.0)
        allowed = bucket.remaining > 0
        if allowed:
            bucket.remaining -= 1
        headers = {
            "X-RateLimit-Limit": str(policy.limit),
            "X-RateLimit-Remaining": str(bucket.remaining),
            "X-RateLimit-Reset": f"{bucket.resets_at:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket_hash(method, template),
        }
        return allowed, headers, reset_after


def rate_limited_response(
    *, retry_after: float, is_global: bool, bucket: str, limit: int = 5, scope: str | None = None
) -> web.Response:
    """A 429 as Discord sends it.
    https://discord.com/developers/docs/topics/rate-limits#exceeding-a-rate-limit"""
    body = {"message": "You are being rate limited.", "retry_after": round(retry_after, 3), "global": is_global}
    headers = {
        "Retry-After": str(max(1, math.ceil(retry_after))),
        "X-RateLimit-Scope": scope or ("global" if is_global else "user"),
        "Via": VIA,
    }
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    else:
        headers.update(
            {
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                "X-RateLimit-Bucket": bucket,
            }
        )
    return json_response(body, status=429, headers=headers)


@dataclass
class Fault:
    """Answer the next ``times`` requests to ``method path`` with ``status``."""

    method: str
    path: str  # route template relative to /api/v10, e.g. "/channels/{channel_id}/messages"
    status: int
    times: int = 1
    retry_after: float = 0.2
    is_global: bool = False
    body: Any = None
    hits: int = 0

    def matches(self, method: str, template: str) -> bool:
        return (self.method in ("*", method)) and (self.path == "*" or normalise_template(self.path) == template)

    def response(self, bucket: str) -> web.Response:
        if self.status == 429:
            return rate_limited_response(retry_after=self.retry_after, is_global=self.is_global, bucket=bucket)
        if self.body is not None:
            return json_response(self.body, status=self.status, headers={"Via": VIA})
        if self.status == 500:
            return json_response({"message": "500: Internal Server Error", "code": 0}, status=500, headers={"Via": VIA})
        # Gateway errors from the edge come back as plain text, not JSON.
        reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}.get(self.status, "Error")
        return web.Response(status=self.status, text=f"{self.status} {reason}", headers={"Via": VIA})


@dataclass
class Faults:
    rest: list[Fault] = field(default_factory=list)

    def add(self, fault: Fault) -> Fault:
        self.rest.append(fault)
        return fault

    def take(self, method: str, template: str) -> Fault | None:
        template = normalise_template(template)
        for fault in self.rest:
            if fault.hits < fault.times and fault.matches(method, template):
                fault.hits += 1
                return fault
        return None
