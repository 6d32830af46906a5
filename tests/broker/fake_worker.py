"""`python -m nst_engine work` with a fast fake Stylizer: a real worker process for the tests to kill.

FAKE_STEP_S sets the seconds per step. A content image whose top-left pixel is POISON kills its own process
with SIGKILL, like a job that makes the OOM killer strike.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from nst_engine.core.optimize import Cancelled, Progress, StyleResult
from nst_engine.core.pixels import fit_long_side
from nst_engine.service.work import main

POISON = (255, 0, 255)


class FakeStylizer:
    def __init__(self, options) -> None:
        self.options = options
        self.step_s = float(os.environ.get("FAKE_STEP_S", "0.01"))

    def warm_up(self, params=None) -> None:
        pass

    def stylize(self, content, styles, params=None, *, style_keys=None, init_image=None, callback=None,
                cancel=None):
        if content.getpixel((0, 0)) == POISON:
            os.kill(os.getpid(), signal.SIGKILL)
        size = fit_long_side(*content.size, params.size)
        t0 = time.monotonic()
        for i in range(1, params.steps + 1):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            time.sleep(self.step_s)
            if callback is not None:
                elapsed = time.monotonic() - t0
                callback(Progress(scale=0, num_scales=1, iteration=i, total=params.steps, losses={"total": 1.0 / i},
                                  elapsed=elapsed, eta=elapsed / i * (params.steps - i), size=size,
                                  _render=lambda side: content.resize((side, side))))
        t = time.monotonic() - t0
        return StyleResult(image=content.resize(size), losses={"total": 1.0},
                           timings={"setup": 0.0, "optimize": t, "total": t}, iterations=params.steps,
                           evaluations=params.steps, scales=[size], device=self.options.device)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], stylizer_factory=FakeStylizer))
