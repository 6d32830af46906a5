"""Per-user and per-guild limits, cooldowns, and one running job per user. Pure asyncio: no discord import.

The engine is fair across requesters; the bot adds what the engine cannot know about: Discord users and
guilds. Each user's jobs go to the engine one at a time (the next waits here until the previous one
finished), so a user who floods the queue holds at most one place in the engine's fair queue and never
runs two jobs at once, even with several engines.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import LimitReached


@dataclass(frozen=True)
class Limits:
    max_queued_per_user: int
    """Jobs a user may have waiting besides the one that runs."""
    user_cooldown_seconds: float
    guild_queue_cap: int
    """Unfinished jobs in one guild."""


@dataclass
class _Entry:
    job_id: str
    user_id: int
    guild_id: int | None
    turn: asyncio.Event = field(default_factory=asyncio.Event)


class Scheduler:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._jobs: dict[str, _Entry] = {}
        self._users: dict[int, list[str]] = {}
        self._last_accepted: dict[int, float] = {}

    # -- admission ----------------------------------------------------------------------------------------

    def check(self, user_id: int, guild_id: int | None, limits: Limits, *, exempt: bool = False) -> None:
        """LimitReached if the user or guild may not start another job now. `exempt` skips the cooldown."""
        mine = len(self._users.get(user_id, ()))
        if mine >= 1 + limits.max_queued_per_user:
            waiting = mine - 1
            raise LimitReached(
                f"You already have a job running and {waiting} waiting (the limit is "
                f"{limits.max_queued_per_user}). Wait for one to finish, or cancel one.")
        if guild_id is not None and self.guild_active(guild_id) >= limits.guild_queue_cap:
            raise LimitReached(
                f"This server's queue is full ({limits.guild_queue_cap} jobs). Please try again in a few minutes.")
        last = self._last_accepted.get(user_id)
        if not exempt and last is not None:
            left = limits.user_cooldown_seconds - (self._clock() - last)
            if left > 0:
                raise LimitReached(f"Please wait {math.ceil(left)} s before starting another job.")

    def admit(self, job_id: str, user_id: int, guild_id: int | None, limits: Limits, *, exempt: bool = False) -> None:
        """Check the limits and register the job in one step (no await in between: no race)."""
        self.check(user_id, guild_id, limits, exempt=exempt)
        self.restore(job_id, user_id, guild_id)
        self._last_accepted[user_id] = self._clock()

    def restore(self, job_id: str, user_id: int, guild_id: int | None) -> None:
        """Register a job accepted earlier (journal recovery): no limits, no cooldown."""
        if job_id in self._jobs:
            return
        entry = _Entry(job_id, user_id, guild_id)
        self._jobs[job_id] = entry
        queue = self._users.setdefault(user_id, [])
        queue.append(job_id)
        if queue[0] == job_id:
            entry.turn.set()

    # -- turns ----------------------------------------------------------------------------------------------

    def ahead_of(self, job_id: str) -> int:
        """How many of the same user's jobs come before this one (0: its turn)."""
        entry = self._jobs[job_id]
        return self._users[entry.user_id].index(job_id)

    async def wait_turn(self, job_id: str) -> None:
        await self._jobs[job_id].turn.wait()

    def release(self, job_id: str) -> None:
        """The job ended (or was cancelled): the user's next job gets its turn."""
        entry = self._jobs.pop(job_id, None)
        if entry is None:
            return
        queue = self._users[entry.user_id]
        queue.remove(job_id)
        if queue:
            self._jobs[queue[0]].turn.set()
        else:
            del self._users[entry.user_id]

    # -- counts -----------------------------------------------------------------------------------------------

    def user_active(self, user_id: int) -> int:
        return len(self._users.get(user_id, ()))

    def guild_active(self, guild_id: int) -> int:
        return sum(1 for e in self._jobs.values() if e.guild_id == guild_id)

    def __len__(self) -> int:
        return len(self._jobs)
