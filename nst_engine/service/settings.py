"""Engine service settings: one frozen dataclass, read from the environment in one place.

`EngineSettings.from_env(os.environ)` is called once by `serve.main`; tests build `EngineSettings(...)`
directly. Invalid values raise `SettingsError`, whose `problems` are one readable line each.
"""
from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..core.params import MAX_SIZE, MIN_SIZE, StyleParams
from ..images.codec import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

T = TypeVar("T")

# A bearer token shorter than this is guessable; `python -c "import secrets; print(secrets.token_urlsafe(32))"`.
MIN_TOKEN_LENGTH = 16
# Discord's default upload limit (10 MiB): the output is encoded to fit it unless the client says otherwise.
DEFAULT_BYTE_BUDGET = 10 * 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The worker's heartbeat runs every third of the ack wait; below this a busy loop could miss it.
MIN_ACK_WAIT = 3.0
BROKER_SCHEMES = ("nats", "tls")


class SettingsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class EngineSettings:
    host: str = "127.0.0.1"
    """ENGINE_HOST. Anything but loopback requires ENGINE_TOKEN."""
    port: int = 8765
    token: str | None = field(default=None, repr=False)
    """ENGINE_TOKEN: `Authorization: Bearer <token>` on every endpoint but /healthz and /readyz."""
    device: str = "auto"
    """ENGINE_DEVICE: 'auto' (every visible GPU, else MPS, else CPU), 'cpu', 'cuda' (all GPUs), or a
    comma-separated list such as 'cuda:0,cuda:1'. One worker per device."""
    presets_dir: Path = Path("presets")
    max_upload_bytes: int = DEFAULT_MAX_BYTES
    """Per uploaded file."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_size: int = 1024
    """Cap on the long side of the output (larger requests are reduced to it, and the job says so)."""
    default_size: int = 512
    max_steps: int = 500
    """Cap on optimiser steps per scale."""
    default_steps: int = StyleParams().steps  # one default for the CLI and the service
    max_styles: int = 4
    queue_size: int = 50
    """Queued jobs (all requesters); beyond it submissions get 429 with Retry-After."""
    max_queued_per_requester: int = 3
    job_timeout: float = 600.0
    """Seconds a job may run before it is cancelled and reported as timed_out."""
    result_ttl: float = 3600.0
    """Seconds a finished job's result is kept; the job record is kept another TTL as 'expired'."""
    shutdown_grace: float = 30.0
    """On SIGTERM, seconds the running jobs get to finish before they are cancelled."""
    log_level: str = "INFO"
    progress_interval: float = 0.25
    """Least seconds between progress events of a job (the first and last are always sent)."""
    preview_interval: float = 2.0
    """Least seconds between preview images of a job (only when a watcher asks for previews)."""
    warm_up: bool = True
    """Load the weights at startup (/readyz is 503 until done)."""
    channels_last: bool = True
    bf16: bool = False
    compile: bool = False
    tf32: bool = True
    broker_url: str | None = None
    """ENGINE_BROKER_URL (`python -m nst_engine work`): the NATS server to pull jobs from, nats://host:4222 or
    tls://host:4222. Off loopback it needs a token or a user and password."""
    broker_token: str | None = field(default=None, repr=False)
    broker_user: str | None = None
    broker_password: str | None = field(default=None, repr=False)
    broker_tls_ca: Path | None = None
    """A CA file to verify the broker's certificate with (implies TLS)."""
    broker_ack_wait: float = 30.0
    """Seconds without a heartbeat after which the broker hands a worker's job to another worker. With
    broker_max_deliver, a setting of the shared queue: the last worker to start sets both."""
    broker_max_deliver: int = 3
    """Deliveries of one job before it is failed; the last one only reports (the job killed its workers)."""

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise SettingsError(problems)

    def problems(self) -> list[str]:
        p: list[str] = []
        if not 0 <= self.port <= 65535:
            p.append(f"ENGINE_PORT must be between 0 and 65535, got {self.port}")
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            p.append(f"ENGINE_TOKEN must be at least {MIN_TOKEN_LENGTH} characters")
        if self.token is None and not is_loopback(self.host):
            p.append(
                f"ENGINE_TOKEN is required to listen on {self.host!r}; without a token the engine only "
                "listens on loopback (127.0.0.1 or ::1)"
            )
        positive = {
            "ENGINE_MAX_UPLOAD_BYTES": self.max_upload_bytes, "ENGINE_MAX_PIXELS": self.max_pixels,
            "ENGINE_MAX_STEPS": self.max_steps, "ENGINE_DEFAULT_STEPS": self.default_steps,
            "ENGINE_MAX_STYLES": self.max_styles, "ENGINE_QUEUE_SIZE": self.queue_size,
            "ENGINE_MAX_QUEUED_PER_REQUESTER": self.max_queued_per_requester,
            "ENGINE_JOB_TIMEOUT": self.job_timeout, "ENGINE_RESULT_TTL": self.result_ttl,
        }
        p += [f"{name} must be positive, got {value}" for name, value in positive.items() if not value > 0]
        non_negative = {
            "ENGINE_SHUTDOWN_GRACE": self.shutdown_grace, "ENGINE_PROGRESS_INTERVAL": self.progress_interval,
            "ENGINE_PREVIEW_INTERVAL": self.preview_interval,
        }
        p += [f"{name} must not be negative, got {value}" for name, value in non_negative.items() if not value >= 0]
        for name, value in (("ENGINE_MAX_SIZE", self.max_size), ("ENGINE_DEFAULT_SIZE", self.default_size)):
            if not MIN_SIZE <= value <= MAX_SIZE:
                p.append(f"{name} must be between {MIN_SIZE} and {MAX_SIZE}, got {value}")
        if self.log_level.upper() not in LOG_LEVELS:
            p.append(f"ENGINE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if not self.device.strip():
            p.append("ENGINE_DEVICE must not be empty (use 'auto')")
        p += broker_problems("ENGINE_BROKER", self.broker_url, self.broker_token, self.broker_user,
                             self.broker_password)
        if not self.broker_ack_wait >= MIN_ACK_WAIT:
            p.append(f"ENGINE_BROKER_ACK_WAIT must be at least {MIN_ACK_WAIT:g} seconds, got {self.broker_ack_wait}")
        if not self.broker_max_deliver >= 2:
            p.append(f"ENGINE_BROKER_MAX_DELIVER must be at least 2, got {self.broker_max_deliver}")
        return p

    @property
    def auth_required(self) -> bool:
        return self.token is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> EngineSettings:
        """Read ENGINE_* variables; unset or empty ones keep their defaults. Raises SettingsError."""
        problems: list[str] = []
        values: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}

        def take(attr: str, parse: Callable[[str], T], what: str) -> None:
            var = f"ENGINE_{attr.upper()}"
            raw = environ.get(var, "").strip()
            if not raw:
                return
            try:
                values[attr] = parse(raw)
            except ValueError:
                problems.append(f"{var} must be {what}, got {raw!r}")

        take("host", str, "a host name or address")
        take("port", int, "an integer")
        take("token", str, "a string")
        take("device", str, "a device name")
        take("presets_dir", Path, "a directory path")
        take("log_level", lambda s: s.upper(), "a log level")
        for attr in ("broker_url", "broker_token", "broker_user", "broker_password"):
            take(attr, str, "a string")
        take("broker_tls_ca", Path, "a file path")
        take("broker_max_deliver", int, "an integer")
        for attr in ("max_upload_bytes", "max_pixels", "max_size", "default_size", "max_steps", "default_steps",
                     "max_styles", "queue_size", "max_queued_per_requester"):
            take(attr, int, "an integer")
        for attr in ("job_timeout", "result_ttl", "shutdown_grace", "progress_interval", "preview_interval",
                     "broker_ack_wait"):
            take(attr, _finite_float, "a number of seconds")
        for attr in ("warm_up", "channels_last", "bf16", "compile", "tf32"):
            take(attr, parse_bool, "true or false")
        assert set(values) <= known
        if problems:
            raise SettingsError(problems)
        return cls(**values)


def broker_problems(prefix: str, url: str | None, token: str | None, user: str | None,
                    password: str | None) -> list[str]:
    """What is wrong with a broker address and its credentials (shared shape with the bot's settings)."""
    if url is None:
        return []
    parts = urlsplit(url)
    if parts.scheme not in BROKER_SCHEMES or not parts.hostname:
        return [f"{prefix}_URL must look like nats://host:4222 or tls://host:4222, got {url!r}"]
    try:
        parts.port
    except ValueError:
        return [f"{prefix}_URL has an invalid port: {url!r}"]
    p: list[str] = []
    if parts.username or parts.password:
        p.append(f"{prefix}_URL must not hold credentials; use {prefix}_TOKEN or {prefix}_USER/_PASSWORD")
    if (user is None) != (password is None):
        p.append(f"{prefix}_USER and {prefix}_PASSWORD go together")
    if token is not None and user is not None:
        p.append(f"set either {prefix}_TOKEN or {prefix}_USER/_PASSWORD, not both")
    if token is None and user is None and not is_loopback(parts.hostname):
        p.append(f"{prefix}_TOKEN (or {prefix}_USER and _PASSWORD) is required for a broker off loopback")
    return p


def _finite_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(raw)
