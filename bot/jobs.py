"""The bot's domain models: what a user asked for, a job's record and states, a guild's settings.

Pure data (no Discord, no SQL); `journal.py` stores them, `runner.py` moves a job through its states.
"""
from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field, fields


class JobState(enum.StrEnum):
    """A job as the bot sees it. `pending`: accepted, not (or no longer) at an engine; `submitted`: an
    engine holds it (engine_url/engine_job_id); the rest are final."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True)
class JobParams:
    """What the user asked for, in the bot's terms (strength is a level name, see render.STRENGTHS)."""

    size: int
    strength: str = "balanced"
    preserve_colors: bool = False
    seed: int | None = None
    preset: str | None = None
    """A global (engine) preset; guild presets travel as the style image."""
    style_label: str | None = None
    """What the style was, for the result text ('preset mosaic', 'your image', ...)."""
    steps: int | None = None

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, raw: str) -> JobParams:
        data = json.loads(raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class JobRecord:
    id: str
    guild_id: int | None
    channel_id: int
    user_id: int
    params: JobParams
    content_name: str
    style_name: str | None = None
    reply_to: int | None = None
    status_message_id: int | None = None
    state: str = JobState.PENDING
    engine_url: str | None = None
    engine_job_id: str | None = None
    parent_id: str | None = None
    attempts: int = 0
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class GuildConfig:
    """Per-guild overrides; None means 'the bot's default'."""

    max_queued_per_user: int | None = None
    user_cooldown_seconds: float | None = None
    guild_queue_cap: int | None = None
    max_size: int | None = None
    allowed_channels: tuple[int, ...] = ()
    """Empty: every channel."""

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["allowed_channels"] = list(self.allowed_channels)
        return json.dumps(data)

    @classmethod
    def from_json(cls, raw: str) -> GuildConfig:
        data = json.loads(raw)
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["allowed_channels"] = tuple(data.get("allowed_channels", ()))
        return cls(**data)
