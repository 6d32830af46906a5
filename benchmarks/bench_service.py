"""Throughput and overhead of the engine service under many tiny jobs.

Starts the engine app in this process on a loopback port, submits `--jobs` tiny jobs from `--requesters`
requesters at once over real HTTP, follows every job's NDJSON stream, fetches every result, and prints:

  * throughput (jobs/s, from the first submission to the last result fetched);
  * queue wait p50/p95 (as the engine measured it) and submit latency p50/p95;
  * the overhead per job beyond the optimisation itself: the worker's running time minus the optimiser's
    own time (thread hand-off, progress relay, output encoding), and the end-to-end wall time per job
    minus the optimiser's time per job.

`--model fake` swaps in a stylizer that does no work, to isolate the service's own costs.

    python benchmarks/bench_service.py --jobs 60 --requesters 6 --size 32 --steps 2
    python benchmarks/bench_service.py --model fake --jobs 200
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
from aiohttp import web  # noqa: E402
from PIL import Image  # noqa: E402

from nst_engine.core.optimize import Cancelled, Progress, StyleResult  # noqa: E402
from nst_engine.core.pixels import fit_long_side  # noqa: E402
from nst_engine.service.app import create_app  # noqa: E402
from nst_engine.service.keys import WORKERS_KEY  # noqa: E402
from nst_engine.service.settings import EngineSettings  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


class NullStylizer:
    """Does no optimisation: returns the content resized, reporting one progress event per step."""

    def __init__(self, options) -> None:
        self.device = options.device

    def warm_up(self, params=None) -> None:
        pass

    def stylize(self, content, styles, params, *, style_keys=None, init_image=None, callback=None, cancel=None):
        t0 = time.perf_counter()
        size = fit_long_side(*content.size, params.size)
        for i in range(1, params.steps + 1):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if callback is not None:
                callback(Progress(0, 1, i, params.steps, {"total": 1.0}, time.perf_counter() - t0, 0.0, size))
        t = time.perf_counter() - t0
        return StyleResult(content.resize(size), {"total": 1.0}, {"setup": 0.0, "optimize": t, "total": t},
                           params.steps, params.steps, [size], self.device)


def _image(seed: int, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size, dtype=np.float32)
    rgb = np.stack([np.add.outer(base, base) / 2, np.tile(base, (size, 1)), rng.uniform(0, 255, (size, size))], -1)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def _one_job(session: aiohttp.ClientSession, base: str, i: int, args: argparse.Namespace,
                   content: bytes, style: bytes) -> dict:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    form = aiohttp.FormData()
    form.add_field("content", content, filename="c.png")
    form.add_field("style", style, filename="s.png")
    for key, value in (("requester", f"user{i % args.requesters}"), ("size", args.size), ("steps", args.steps)):
        form.add_field(key, str(value))
    t0 = time.perf_counter()
    async with session.post(f"{base}/v1/jobs", data=form, headers=headers) as resp:
        body = await resp.json()
        if resp.status != 202:
            raise RuntimeError(f"submit failed: {resp.status} {body}")
    t_submitted = time.perf_counter()
    job_id = body["job_id"]
    final = None
    progress_events = 0
    async with session.get(f"{base}/v1/jobs/{job_id}/events", headers=headers) as resp:
        async for line in resp.content:
            if line.strip():
                event = json.loads(line)
                progress_events += event["type"] == "progress"
                final = event
    assert final is not None and final["type"] == "done", final
    async with session.get(f"{base}/v1/jobs/{job_id}/result", headers=headers) as resp:
        data = await resp.read()
        assert resp.status == 200 and data
    t_done = time.perf_counter()
    stats = final["stats"]
    return {
        "submit_s": t_submitted - t0,
        "total_s": t_done - t0,
        "queue_wait_s": final["queue_wait_s"],
        "run_s": final["run_s"],
        "stylize_s": stats["stylize_s"],
        "encode_s": stats["encode_s"],
        "progress_events": progress_events,
    }


async def bench(args: argparse.Namespace) -> None:
    settings = EngineSettings(
        token=TOKEN, device=args.device, max_size=max(args.size, 64), default_size=args.size,
        max_steps=max(args.steps, 1), default_steps=args.steps, queue_size=args.jobs,
        max_queued_per_requester=args.jobs, job_timeout=600, presets_dir=Path("/nonexistent-bench-presets"),
        progress_interval=0.25,
    )
    factory = NullStylizer if args.model == "fake" else None
    app = create_app(settings, stylizer_factory=factory)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port the OS picked
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            t_ready = time.perf_counter()
            while True:
                async with session.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.1)
            startup = time.perf_counter() - t_ready
            content, style = _image(1), _image(2)
            # One warm-up job (first-call costs: allocator, autotuning), not measured.
            await _one_job(session, base, 0, args, content, style)
            t0 = time.perf_counter()
            results = await asyncio.gather(*(_one_job(session, base, i, args, content, style)
                                             for i in range(args.jobs)))
            wall = time.perf_counter() - t0
    finally:
        await runner.cleanup()

    n = len(results)
    stylize = [r["stylize_s"] for r in results]
    worker_overhead = [r["run_s"] - r["stylize_s"] for r in results]
    workers = len(app[WORKERS_KEY])
    print(f"engine service benchmark: model={args.model} device={args.device} jobs={n} "
          f"requesters={args.requesters} size={args.size} steps={args.steps}")
    print(f"  workers ready after         {startup:8.2f} s")
    print(f"  wall time                   {wall:8.2f} s")
    print(f"  throughput                  {n / wall:8.2f} jobs/s")
    print(f"  queue wait      p50 / p95   {_pct([r['queue_wait_s'] for r in results], .5):8.3f} / "
          f"{_pct([r['queue_wait_s'] for r in results], .95):.3f} s")
    print(f"  submit latency  p50 / p95   {_pct([r['submit_s'] for r in results], .5) * 1000:8.1f} / "
          f"{_pct([r['submit_s'] for r in results], .95) * 1000:.1f} ms")
    print(f"  stylize (optimiser) mean    {statistics.mean(stylize) * 1000:8.1f} ms/job")
    print(f"  encode (in worker)  mean    {statistics.mean(r['encode_s'] for r in results) * 1000:8.1f} ms/job")
    print(f"  worker overhead p50 / p95   {_pct(worker_overhead, .5) * 1000:8.1f} / "
          f"{_pct(worker_overhead, .95) * 1000:.1f} ms/job  (running time - optimiser time)")
    per_job = wall / n
    print(f"  service overhead per job    {(per_job - statistics.mean(stylize)) * 1000:8.1f} ms  "
          f"(wall/jobs - optimiser time; {workers} worker(s))")
    print(f"  progress events per job     {statistics.mean(r['progress_events'] for r in results):8.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--requesters", type=int, default=5)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", choices=("real", "fake"), default="real")
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
