"""Exponential backoff with jitter: the one retry pacing the bot uses (engine calls, offline engines, restarts)."""
from __future__ import annotations

import random

# Each delay is the nominal one times a random factor in [1 - JITTER, 1 + JITTER], so that many jobs
# waiting on the same outage do not retry in lockstep.
JITTER = 0.2
MIN_DELAY_S = 0.01


class Backoff:
    """`next()` gives start, 2·start, 4·start … up to `cap` seconds (jittered); `reset()` after a success.

    A server's Retry-After, when given and longer, replaces the nominal delay (still capped, and only ever
    lengthened by the jitter, so the server's wish is honoured).
    """

    def __init__(self, start: float, cap: float) -> None:
        self.start, self.cap = start, max(start, cap)
        self.current = start

    def next(self, retry_after: float | None = None) -> float:
        nominal = min(self.cap, self.current)
        self.current = min(self.cap, self.current * 2)
        if retry_after:
            return max(MIN_DELAY_S, max(nominal, min(self.cap, retry_after)) * random.uniform(1.0, 1.0 + JITTER))
        return max(MIN_DELAY_S, nominal * random.uniform(1.0 - JITTER, 1.0 + JITTER))

    def reset(self) -> None:
        self.current = self.start
