"""Failures with real processes: workers killed with -9 or stopped with SIGTERM, the broker killed and restarted,
the bot restarting, poison jobs, cancels in every state, and a broker that is not there."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from bot.engine.broker import BrokerAddress, BrokerEngine
from bot.errors import EngineUnavailable
from tests.broker.fake_worker import POISON  # isort: skip
from tests.broker.support import (  # isort: skip
    ACK_WAIT, TOKEN, Follower, follow, pid_running, png, spec, wait_until,
)

pytestmark = pytest.mark.asyncio


async def test_a_worker_killed_mid_job_hands_it_to_another(engine: BrokerEngine, workers) -> None:
    workers.start(FAKE_STEP_S="0.05")
    workers.start(FAKE_STEP_S="0.05")
    await engine.submit(spec(steps=200, key="victim-0"))
    follower = Follower(engine, "victim-0")
    await wait_until(lambda: follower.seen("progress"), 60, "the job to make progress")
    pid = await wait_until(lambda: pid_running(engine, "victim-0"), 30, "the worker running the job")
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    final = await follower.final(90)
    assert final["type"] == "done"
    lost = follower.seen("notice", code="worker_lost")
    assert lost and "restarting on another" in lost[0]["message"]
    # The job moved on after AckWait, not before (the dead worker's heartbeat had stopped).
    restarted = [e for e in follower.events if e["type"] == "started"]
    assert len(restarted) == 2
    assert time.monotonic() - killed_at >= ACK_WAIT * 0.9
    assert await engine.result("nats", "victim-0")


async def test_sigterm_releases_the_job_at_once(engine: BrokerEngine, workers) -> None:
    # A long AckWait: the job can only move on quickly if the stopping worker gives it back.
    first = workers.start(FAKE_STEP_S="0.05", ENGINE_BROKER_ACK_WAIT="60")
    await engine.submit(spec(steps=200, key="released-0"))
    follower = Follower(engine, "released-0")
    await wait_until(lambda: follower.seen("progress"), 60, "the job to make progress")
    second = workers.start(FAKE_STEP_S="0.01", ENGINE_BROKER_ACK_WAIT="60")
    await wait_until(lambda: _count_workers(engine, 2), 60, "the second worker")
    first.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    final = await follower.final(60)
    assert final["type"] == "done"
    assert time.monotonic() - stopped_at < 30  # well inside the 60 s AckWait
    assert first.wait(30) == 0  # a clean exit
    assert follower.seen("notice", code="released")
    assert follower.seen("notice", code="worker_restarted")
    assert second.poll() is None


async def _count_workers(engine: BrokerEngine, n: int) -> bool:
    return len(await engine.workers()) >= n


async def test_queued_jobs_survive_a_broker_crash(nats_server, engine: BrokerEngine, workers) -> None:
    for i in range(3):
        await engine.submit(spec(f"user-{i}", key=f"survivor-{i}"))
    nats_server.kill()  # kill -9, with the jobs in its store and no worker yet
    await wait_until(lambda: not engine.connected, 30, "the bot to notice")
    with pytest.raises(EngineUnavailable):
        await engine.submit(spec("user-9", key="while-down-0"))
    nats_server.start()  # same port, same store
    await wait_until(lambda: engine.connected, 60, "the bot to reconnect by itself")
    workers.start()
    finals = await asyncio.gather(*(follow(engine, f"survivor-{i}", 90) for i in range(3)))
    assert [events[-1]["type"] for events in finals] == ["done"] * 3


async def test_a_restarted_bot_reattaches_through_kv_and_nothing_runs_twice(nats_server, engine, workers) -> None:
    workers.start(FAKE_STEP_S="0.03")
    first = await engine.submit(spec(steps=40, key="reattach-0"))
    follower = Follower(engine, "reattach-0")
    await wait_until(lambda: follower.seen("progress"), 60, "the job to start")
    follower.task.cancel()
    await engine.close()  # the bot goes away mid-job

    again = BrokerEngine(BrokerAddress(nats_server.url, token=TOKEN))
    await again.start()
    try:
        # A bot that died before journaling the submit sends it again: the broker drops the duplicate.
        resubmitted = await again.submit(spec(steps=40, key="reattach-0"))
        assert resubmitted.status["duplicate"] is True and first.status["duplicate"] is False
        events = await follow(again, "reattach-0", 60)
        assert events[-1]["type"] == "done"
        # The next follower after the end reads the outcome from KV alone.
        late = await follow(again, "reattach-0", 10)
        assert [e["type"] for e in late] == ["status", "done"] and late[-1]["job_id"] == "reattach-0"
        workers_now = await again.workers()
        assert sum(w["jobs_done"] for w in workers_now) == 1
    finally:
        await again.close()


async def test_a_poison_job_fails_clearly_at_max_deliver(engine: BrokerEngine, workers) -> None:
    await engine.submit(spec(content=png(POISON), key="poison-0"))
    follower = Follower(engine, "poison-0")
    # Each delivery kills its worker; keep one worker alive, as a supervisor (or compose's restart) would.
    deadline = time.monotonic() + 120
    while not follower.task.done():
        assert time.monotonic() < deadline, "the poison job was never failed"
        if not any(p.poll() is None for p in workers.procs):
            workers.start()
        await asyncio.sleep(0.2)
    final = follower.events[-1]
    assert final["type"] == "failed" and final["error"]["code"] == "worker_lost"
    assert "stopped 2 times" in final["error"]["message"]
    assert sum(1 for p in workers.procs if p.returncode == -signal.SIGKILL) == 2


async def test_cancel_a_queued_job(engine: BrokerEngine, workers) -> None:
    await engine.submit(spec(key="cancel-queued-0"))
    assert await engine.position("cancel-queued-0") == 1
    await engine.cancel("nats", "cancel-queued-0")
    assert await engine.position("cancel-queued-0") is None  # deleted from the stream
    worker = workers.start()
    await engine.submit(spec("user-2", key="after-0"))
    assert (await follow(engine, "after-0"))[-1]["type"] == "done"
    events = await follow(engine, "cancel-queued-0", 10)
    assert events[-1]["type"] == "cancelled" and not [e for e in events if e["type"] == "started"]
    assert "cancel-queued-0" not in workers.log_of(worker)


async def test_cancel_a_running_job(engine: BrokerEngine, workers) -> None:
    workers.start(FAKE_STEP_S="0.05")
    await engine.submit(spec(steps=200, key="cancel-running-0"))
    follower = Follower(engine, "cancel-running-0")
    await wait_until(lambda: follower.seen("progress"), 60, "the job to run")
    await engine.cancel("nats", "cancel-running-0")
    final = await follower.final(30)
    assert final["type"] == "cancelled"
    assert final["progress"]["iteration"] < 200
    assert (await engine.status("nats", "cancel-running-0"))["type"] == "cancelled"


async def test_cancel_a_job_a_worker_has_just_fetched(nats_server, engine: BrokerEngine, tmp_path) -> None:
    """Deleting the message alone would lose here: the worker holds it already. The KV flag wins."""
    from nst_engine.images.presets import PresetLibrary
    from nst_engine.service.broker import Broker, Puller
    from nst_engine.service.jetstream import CONSUMER, STREAM, BrokerAddress as EngineAddress, connect
    from nst_engine.service.metrics import EngineMetrics
    from nst_engine.service.settings import EngineSettings
    from tests.broker.fake_worker import FakeStylizer  # isort: skip

    settings = EngineSettings(device="cpu", warm_up=False, broker_url=nats_server.url, broker_token=TOKEN,
                              broker_ack_wait=ACK_WAIT)
    nc = await connect(EngineAddress(nats_server.url, TOKEN), name="test worker")
    try:
        broker = Broker(nc, settings)
        await broker.open()
        calls: list[object] = []

        def factory(options):
            stylizer = FakeStylizer(options)
            real = stylizer.stylize
            stylizer.stylize = lambda *a, **k: (calls.append(a), real(*a, **k))[1]
            return stylizer

        puller = Puller(0, "cpu", broker, metrics=EngineMetrics(queue_depth=lambda: 0, devices=lambda: ["cpu"]),
                        factory=factory, library=PresetLibrary(tmp_path))
        broker.pullers = [puller]
        puller.worker.start()
        await wait_until(lambda: puller.worker.ready, 30, "the worker")
        await engine.submit(spec(key="fetched-0"))
        sub = await broker.js.pull_subscribe_bind(durable=CONSUMER, stream=STREAM)
        [msg] = await sub.fetch(1, timeout=10)
        await engine.cancel("nats", "fetched-0")  # the worker has the message in hand
        await puller._handle(msg)
        final = await engine.final("fetched-0")
        assert final is not None and final["type"] == "cancelled"
        assert calls == [] and puller.worker.jobs_done == 0
        await puller.worker.stop()
    finally:
        await nc.close()


async def test_a_broker_that_is_not_there_yet(tmp_path) -> None:
    from tests.broker.support import NatsServer, free_port

    port = free_port()
    client = BrokerEngine(BrokerAddress(f"nats://127.0.0.1:{port}", token=TOKEN))
    await client.start()  # no exception: the bot starts, and says the engine is offline
    try:
        assert not client.connected and not await client.ready()
        with pytest.raises(EngineUnavailable) as err:
            await client.submit(spec(key="early-0"))
        assert "offline" in err.value.message
        server = NatsServer(tmp_path / "js", tmp_path / "log", port=port)
        server.start()
        try:
            await wait_until(lambda: client.connected, 60, "the bot to connect by itself")
            assert (await client.submit(spec(key="early-0"))).job_id == "early-0"
        finally:
            server.kill()
    finally:
        await client.close()
