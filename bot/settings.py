"""Bot settings: one frozen dataclass, read from the environment (and `.env`) in one place.

`BotSettings.from_env(environ)` is called once by `bot/__main__.py`; tests build `BotSettings(...)` directly.
Problems raise `SettingsError`, whose `problems` are one readable line each. The token never appears in a
repr or a log line.
"""
from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Discord's own CDN hosts: the only places attachments are fetched from (no arbitrary URLs: no SSRF).
DISCORD_CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
# Discord's attachment limit for unboosted servers is 10 MiB (25 MiB for Nitro users); anything bigger
# than this is refused before it is downloaded.
DEFAULT_MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
# The engine's own range for the output's long side.
# Output sizes (long side, px) anyone may set or ask for: the engine's own range (nst_engine.core.params).
# MAX_SIZE narrows it for the bot and an admin's max_size per guild narrows it further.
MIN_SIZE, MAX_SIZE_LIMIT = 16, 4096

# Every variable the bot reads, with a one-line description (docs/bot.md and .env.example say more).
VARIABLES: dict[str, str] = {
    "DISCORD_TOKEN": "the bot token from the Discord developer portal (required, never logged)",
    "COMMAND_PREFIX": "prefix of text commands (default !)",
    "DEV_GUILD_ID": "sync slash commands to this guild at start (instant); otherwise use the owner's !sync",
    "OWNER_IDS": "comma-separated user ids allowed to run owner commands (default: the application owner)",
    "ENGINE_URLS": "the engine's base URL; empty = start a local engine process (embedded)",
    "ENGINE_TOKEN": "bearer token of the engine in ENGINE_URLS",
    "ENGINE_BROKER_URL": "nats://host:4222 (or tls://): send jobs to a NATS JetStream queue that GPU workers pull from",
    "ENGINE_BROKER_TOKEN": "token of the NATS broker (or ENGINE_BROKER_USER and _PASSWORD); required off loopback",
    "ENGINE_BROKER_USER": "user name on the NATS broker",
    "ENGINE_BROKER_PASSWORD": "password on the NATS broker (never logged)",
    "ENGINE_BROKER_TLS_CA": "a CA file to verify the broker's TLS certificate with (implies TLS)",
    "BOT_DB_PATH": "SQLite file for the job journal, presets and guild settings (default data/bot.sqlite3)",
    "MAX_QUEUED_PER_USER": "jobs a user may have waiting besides the running one (default 2)",
    "USER_COOLDOWN_SECONDS": "seconds between two jobs of one user (default 10)",
    "GUILD_QUEUE_CAP": "unfinished jobs per guild (default 20)",
    "DEFAULT_SIZE": "long side of the output in px when the user does not say (default 512)",
    "MAX_SIZE": "largest size a user may ask for; admins may lower it per guild (default 1024)",
    "JOB_STEPS": "optimiser steps per job (default: the engine's default)",
    "PROGRESS_EDIT_INTERVAL": "least seconds between two progress edits of a status message (default 3)",
    "PREVIEW_INTERVAL": "least seconds between two preview images (default 10)",
    "MAX_ATTACHMENT_BYTES": "largest attachment accepted, checked before downloading (default 25 MiB)",
    "ALLOWED_CDN_HOSTS": "comma-separated hosts attachments may come from (default Discord's CDN)",
    "ENGINE_START_TIMEOUT": "seconds to wait for the embedded engine to load its model (default 300)",
    "ENGINE_RETRY_MAX_SECONDS": "longest wait between two tries to reach an offline engine (default 30)",
    "BOT_HEALTH_FILE": "a file the bot touches while connected to Discord, for container health checks (default none)",
    "LOG_LEVEL": "DEBUG, INFO, WARNING, ERROR (default INFO)",
}


class SettingsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class BotSettings:
    discord_token: str = field(repr=False)
    command_prefix: str = "!"
    dev_guild_id: int | None = None
    owner_ids: tuple[int, ...] = ()
    engine_url: str | None = None
    """ENGINE_URLS: one engine over HTTP; None: the embedded engine (or the broker)."""
    engine_token: str | None = field(default=None, repr=False)
    engine_broker_url: str | None = None
    engine_broker_token: str | None = field(default=None, repr=False)
    engine_broker_user: str | None = None
    engine_broker_password: str | None = field(default=None, repr=False)
    engine_broker_tls_ca: Path | None = None
    db_path: Path = Path("data/bot.sqlite3")
    max_queued_per_user: int = 2
    user_cooldown_seconds: float = 10.0
    guild_queue_cap: int = 20
    default_size: int = 512
    max_size: int = 1024
    job_steps: int | None = None
    progress_edit_interval: float = 3.0
    preview_interval: float = 10.0
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES
    allowed_cdn_hosts: tuple[str, ...] = DISCORD_CDN_HOSTS
    engine_start_timeout: float = 300.0
    engine_retry_max_seconds: float = 30.0
    health_file: Path | None = None
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise SettingsError(problems)

    def problems(self) -> list[str]:
        p: list[str] = []
        if not self.discord_token.strip():
            p.append("DISCORD_TOKEN is not set")
        elif re.search(r"\s", self.discord_token):
            p.append("DISCORD_TOKEN contains spaces (paste the token alone, without 'Bot ')")
        if not self.command_prefix or len(self.command_prefix) > 5 or re.search(r"\s", self.command_prefix):
            p.append("COMMAND_PREFIX must be 1-5 characters without spaces")
        if self.engine_url is not None and "," in self.engine_url:
            p.append("ENGINE_URLS takes one engine; for several GPU hosts run workers on a broker instead "
                     "(ENGINE_BROKER_URL, docs/self-hosting.md)")
        elif self.engine_url is not None and not re.match(r"^https?://[^/\s]+", self.engine_url):
            p.append(f"ENGINE_URLS: {self.engine_url!r} is not an http(s) URL")
        if self.engine_broker_url is not None and self.engine_url is not None:
            p.append("set either ENGINE_URLS (one engine over HTTP) or ENGINE_BROKER_URL (GPU workers), not both")
        p += _broker_problems(self.engine_broker_url, self.engine_broker_token, self.engine_broker_user,
                              self.engine_broker_password)
        if self.max_queued_per_user < 0:
            p.append(f"MAX_QUEUED_PER_USER must not be negative, got {self.max_queued_per_user}")
        if self.user_cooldown_seconds < 0:
            p.append(f"USER_COOLDOWN_SECONDS must not be negative, got {self.user_cooldown_seconds:g}")
        if self.guild_queue_cap < 1:
            p.append(f"GUILD_QUEUE_CAP must be at least 1, got {self.guild_queue_cap}")
        for name, value in (("DEFAULT_SIZE", self.default_size), ("MAX_SIZE", self.max_size)):
            if not MIN_SIZE <= value <= MAX_SIZE_LIMIT:
                p.append(f"{name} must be between {MIN_SIZE} and {MAX_SIZE_LIMIT}, got {value}")
        if self.default_size > self.max_size:
            p.append(f"DEFAULT_SIZE ({self.default_size}) must not be larger than MAX_SIZE ({self.max_size})")
        if self.job_steps is not None and self.job_steps < 1:
            p.append(f"JOB_STEPS must be at least 1, got {self.job_steps}")
        for name, value in (("PROGRESS_EDIT_INTERVAL", self.progress_edit_interval),
                            ("PREVIEW_INTERVAL", self.preview_interval),
                            ("ENGINE_RETRY_MAX_SECONDS", self.engine_retry_max_seconds)):
            if value < 0:
                p.append(f"{name} must not be negative, got {value:g}")
        if self.engine_start_timeout <= 0:
            p.append(f"ENGINE_START_TIMEOUT must be positive, got {self.engine_start_timeout:g}")
        if self.max_attachment_bytes < 1024:
            p.append(f"MAX_ATTACHMENT_BYTES must be at least 1024, got {self.max_attachment_bytes}")
        if not self.allowed_cdn_hosts:
            p.append("ALLOWED_CDN_HOSTS must name at least one host")
        if self.log_level.upper() not in LOG_LEVELS:
            p.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        return p

    @property
    def embedded_engine(self) -> bool:
        """No ENGINE_URLS and no broker: the bot starts a local engine process itself."""
        return self.engine_url is None and self.engine_broker_url is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BotSettings:
        """Read the variables in VARIABLES; unset or empty ones keep their defaults. Raises SettingsError."""
        problems: list[str] = []
        values: dict[str, Any] = {}

        def take(var: str, attr: str, parse: Callable[[str], T], what: str) -> None:
            raw = environ.get(var, "").strip()
            if not raw:
                return
            try:
                values[attr] = parse(raw)
            except ValueError:
                problems.append(f"{var} must be {what}, got {raw!r}")

        values["discord_token"] = environ.get("DISCORD_TOKEN", "").strip()
        take("COMMAND_PREFIX", "command_prefix", str, "text")
        take("DEV_GUILD_ID", "dev_guild_id", _snowflake, "a guild id (a number)")
        take("OWNER_IDS", "owner_ids", lambda s: tuple(_snowflake(x) for x in _split(s)), "comma-separated user ids")
        take("ENGINE_URLS", "engine_url", lambda s: s.rstrip("/"), "a URL")
        take("ENGINE_TOKEN", "engine_token", str, "text")
        for var in ("ENGINE_BROKER_URL", "ENGINE_BROKER_TOKEN", "ENGINE_BROKER_USER", "ENGINE_BROKER_PASSWORD"):
            take(var, var.lower(), str, "text")
        take("ENGINE_BROKER_TLS_CA", "engine_broker_tls_ca", Path, "a file path")
        take("BOT_DB_PATH", "db_path", Path, "a file path")
        for var, attr in (("MAX_QUEUED_PER_USER", "max_queued_per_user"), ("GUILD_QUEUE_CAP", "guild_queue_cap"),
                          ("DEFAULT_SIZE", "default_size"), ("MAX_SIZE", "max_size"), ("JOB_STEPS", "job_steps"),
                          ("MAX_ATTACHMENT_BYTES", "max_attachment_bytes")):
            take(var, attr, int, "a whole number")
        for var, attr in (("USER_COOLDOWN_SECONDS", "user_cooldown_seconds"),
                          ("PROGRESS_EDIT_INTERVAL", "progress_edit_interval"),
                          ("PREVIEW_INTERVAL", "preview_interval"),
                          ("ENGINE_START_TIMEOUT", "engine_start_timeout"),
                          ("ENGINE_RETRY_MAX_SECONDS", "engine_retry_max_seconds")):
            take(var, attr, _finite_float, "a number of seconds")
        take("ALLOWED_CDN_HOSTS", "allowed_cdn_hosts", lambda s: tuple(h.lower() for h in _split(s)),
             "comma-separated host names")
        take("BOT_HEALTH_FILE", "health_file", Path, "a file path")
        take("LOG_LEVEL", "log_level", lambda s: s.upper(), "a log level")
        if problems:
            raise SettingsError(problems)
        try:
            return cls(**values)
        except SettingsError as exc:
            raise SettingsError(problems + exc.problems) from None


def _broker_problems(url: str | None, token: str | None, user: str | None, password: str | None) -> list[str]:
    """The same rules as the workers' (nst_engine/service/settings.py): a nats:// or tls:// URL without
    credentials in it, and a token or a user and password for a broker off loopback."""
    if url is None:
        return []
    parts = urlsplit(url)
    try:
        parts.port
    except ValueError:
        return [f"ENGINE_BROKER_URL has an invalid port: {url!r}"]
    if parts.scheme not in ("nats", "tls") or not parts.hostname:
        return [f"ENGINE_BROKER_URL must look like nats://host:4222 or tls://host:4222, got {url!r}"]
    p: list[str] = []
    if parts.username or parts.password:
        p.append("ENGINE_BROKER_URL must not hold credentials; use ENGINE_BROKER_TOKEN or ENGINE_BROKER_USER/_PASSWORD")
    if (user is None) != (password is None):
        p.append("ENGINE_BROKER_USER and ENGINE_BROKER_PASSWORD go together")
    if token is not None and user is not None:
        p.append("set either ENGINE_BROKER_TOKEN or ENGINE_BROKER_USER/_PASSWORD, not both")
    if token is None and user is None and not _is_loopback(parts.hostname):
        p.append("ENGINE_BROKER_TOKEN (or ENGINE_BROKER_USER and _PASSWORD) is required for a broker off loopback")
    return p


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _snowflake(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(raw)
    return value


def _finite_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a `.env` file (comments, blank lines, `export` and quotes allowed); {} if absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            continue
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


def environment(environ: Mapping[str, str], env_file: Path = Path(".env")) -> dict[str, str]:
    """The process environment over the `.env` file: a variable that is set wins over the file."""
    return {**read_env_file(env_file), **environ}
