"""Queueing, fairness, cancelling, limits and failures of the engine service (fake stylizer)."""
from __future__ import annotations

import asyncio
import collections

import pytest

from nst_engine.core.params import ParamError
from nst_engine.service.keys import JOBS_KEY, QUEUE_KEY, WORKERS_KEY

pytestmark = pytest.mark.asyncio


async def _held(engine, samples, requester="holder"):
    """Submit a job the fake holds at its first iteration; returns once it is running."""
    engine.fake.hold = True
    body = await engine.submit_ok(samples.png(), [samples.png()], requester=requester)
    await engine.wait_for(lambda: engine.job(body["job_id"]).state == "running")
    return body


async def test_thirty_jobs_from_five_requesters_all_complete_fairly(start_engine, samples):
    engine = await start_engine(queue_size=30, max_queued_per_requester=6)
    engine.fake.hold = True
    requesters = [f"user{i}" for i in range(5)]
    # Each requester fires all six jobs at once, heaviest first: plain FIFO would run user0's six first.
    submissions = [engine.submit_ok(samples.png(16 + i, 16), [samples.jpeg()], requester=r, steps=2)
                   for r in requesters for i in range(6)]
    bodies = await asyncio.gather(*submissions)
    assert len({b["job_id"] for b in bodies}) == 30
    engine.fake.release.set()
    finals = await asyncio.gather(*(engine.wait(b["job_id"]) for b in bodies))
    assert [f["type"] for f in finals] == ["done"] * 30
    for body in bodies:  # every result is there
        async with engine.client.get(f"/v1/jobs/{body['job_id']}/result", headers=engine.auth) as resp:
            assert resp.status == 200
    jobs = sorted((engine.job(b["job_id"]) for b in bodies), key=lambda j: j.started_mono)
    order = [j.requester for j in jobs]
    # Fair: every requester's first job starts within the first round ...
    assert set(order[:6]) == set(requesters), order
    # ... and no requester ever gets more than one job ahead of anyone who still has jobs waiting.
    counts = collections.Counter()
    remaining = collections.Counter(order)
    for requester in order:
        counts[requester] += 1
        remaining[requester] -= 1
        waiting = [r for r in requesters if remaining[r] > 0]
        if waiting:
            assert counts[requester] - min(counts[r] for r in waiting) <= 2, order
    assert len(engine.app[QUEUE_KEY]) == 0


async def test_positions_are_reported_and_updated(start_engine, samples):
    engine = await start_engine()
    await _held(engine, samples)
    a1 = await engine.submit_ok(samples.png(), [samples.png()], requester="a")
    a2 = await engine.submit_ok(samples.png(), [samples.png()], requester="a")
    b1 = await engine.submit_ok(samples.png(), [samples.png()], requester="b")
    assert (a1["position"], a2["position"], b1["position"]) == (1, 2, 2)
    assert engine.job(a2["job_id"]).position == 3  # b1 went ahead of a's second job (round-robin)
    status = await engine.get_json(f"/v1/jobs/{a2['job_id']}")
    assert status["position"] == 3 and status["state"] == "queued"
    # Cancelling a1 moves a2 to the front (a and b now have one job each; a came first), and a2's watcher hears.
    watch = asyncio.create_task(engine.events(a2["job_id"]))
    await engine.wait_for(lambda: engine.job(a2["job_id"])._watchers)
    async with engine.client.delete(f"/v1/jobs/{a1['job_id']}", headers=engine.auth) as resp:
        assert resp.status == 200
    assert engine.job(a2["job_id"]).position == 1 and engine.job(b1["job_id"]).position == 2
    engine.fake.release.set()
    events = await watch
    assert events[0]["position"] == 3
    positions = [e["position"] for e in events if e["type"] == "position"]
    assert positions == [1]
    assert events[-1]["type"] == "done"


async def test_cancel_while_queued(start_engine, samples):
    engine = await start_engine()
    held = await _held(engine, samples)
    body = await engine.submit_ok(samples.png(), [samples.png()], requester="other")
    watch = asyncio.create_task(engine.events(body["job_id"]))
    await engine.wait_for(lambda: engine.job(body["job_id"])._watchers)
    async with engine.client.post(f"/v1/jobs/{body['job_id']}/cancel", headers=engine.auth) as resp:
        assert resp.status == 200
        assert (await resp.json())["state"] == "cancelled"
    events = await watch
    assert events[-1]["type"] == "cancelled" and events[-1]["error"]["code"] == "cancelled"
    assert len(engine.app[QUEUE_KEY]) == 0
    async with engine.client.delete(f"/v1/jobs/{body['job_id']}", headers=engine.auth) as resp:
        assert resp.status == 200  # cancelling twice is harmless
    engine.fake.release.set()
    assert (await engine.wait(held["job_id"]))["type"] == "done"
    async with engine.client.delete(f"/v1/jobs/{held['job_id']}", headers=engine.auth) as resp:
        assert resp.status == 409
    assert len(engine.fake.calls) == 1  # the cancelled job never reached the optimiser


async def test_cancel_while_running(start_engine, samples):
    engine = await start_engine()
    body = await _held(engine, samples)
    watch = asyncio.create_task(engine.events(body["job_id"]))
    await engine.wait_for(lambda: engine.job(body["job_id"])._watchers)
    async with engine.client.delete(f"/v1/jobs/{body['job_id']}", headers=engine.auth) as resp:
        assert resp.status == 202
        assert (await resp.json())["cancel_requested"] is True
    events = await watch
    assert events[-1]["type"] == "cancelled"
    # The worker carries on with the next job.
    engine.fake.hold = False
    nxt = await engine.submit_ok(samples.png(), [samples.png()])
    assert (await engine.wait(nxt["job_id"]))["type"] == "done"


async def test_queue_full(start_engine, samples):
    engine = await start_engine(queue_size=2, max_queued_per_requester=2)
    await _held(engine, samples)
    await engine.submit_ok(samples.png(), [samples.png()], requester="a")
    await engine.submit_ok(samples.png(), [samples.png()], requester="b")
    async with await engine.submit(samples.png(), [samples.png()], requester="c") as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"]["code"] == "queue_full"
    engine.fake.release.set()


async def test_per_requester_cap(start_engine, samples):
    engine = await start_engine(max_queued_per_requester=2)
    await _held(engine, samples, requester="heavy")
    await engine.submit_ok(samples.png(), [samples.png()], requester="heavy")
    await engine.submit_ok(samples.png(), [samples.png()], requester="heavy")
    async with await engine.submit(samples.png(), [samples.png()], requester="heavy") as resp:
        assert resp.status == 429
        assert "Retry-After" in resp.headers
        assert (await resp.json())["error"]["code"] == "too_many_jobs"
    await engine.submit_ok(samples.png(), [samples.png()], requester="light")  # others are not affected
    engine.fake.release.set()


async def test_time_limit(start_engine, samples):
    engine = await start_engine(job_timeout=0.3)
    engine.fake.hold = True  # never released: only the time limit ends it
    body = await engine.submit_ok(samples.png(), [samples.png()])
    final = await engine.wait(body["job_id"])
    assert final["type"] == "timed_out" and final["error"]["code"] == "timed_out"
    engine.fake.hold = False
    nxt = await engine.submit_ok(samples.png(), [samples.png()])
    assert (await engine.wait(nxt["job_id"]))["type"] == "done"


async def test_out_of_memory_retries_smaller(start_engine, samples):
    engine = await start_engine()
    await _held(engine, samples)  # so the watcher is attached before the job starts
    engine.fake.oom_above = 45
    body = await engine.submit_ok(samples.png(48, 32), [samples.png()], size=60)
    events = await engine.watched(body["job_id"])
    notices = [e for e in events if e["type"] == "notice"]
    assert notices and notices[0]["code"] == "oom_retry" and "42 px" in notices[0]["message"]
    final = events[-1]
    assert final["type"] == "done" and final["result"]["width"] == 42
    assert [n["code"] for n in final["notes"]] == ["oom_retry"]
    assert [c["size"] for c in engine.fake.calls][1:] == [60, 42]


async def test_out_of_memory_twice_fails_clearly(start_engine, samples):
    engine = await start_engine()
    engine.fake.oom_above = 10
    body = await engine.submit_ok(samples.png(), [samples.png()], size=32)
    final = await engine.wait(body["job_id"])
    assert final["type"] == "failed" and final["error"]["code"] == "out_of_memory"
    assert "22 px" in final["error"]["message"]
    engine.fake.oom_above = None
    nxt = await engine.submit_ok(samples.png(), [samples.png()])
    assert (await engine.wait(nxt["job_id"]))["type"] == "done"


@pytest.mark.parametrize("exc,code", [
    (RuntimeError("kaput"), "internal_error"),
    (ParamError("style image too small"), "invalid_parameter"),
    (ZeroDivisionError(), "internal_error"),
])
async def test_an_exception_in_a_job_does_not_kill_the_worker(start_engine, samples, exc, code):
    engine = await start_engine()
    engine.fake.fail_with, engine.fake.fail_once = exc, True
    body = await engine.submit_ok(samples.png(), [samples.png()])
    final = await engine.wait(body["job_id"])
    assert final["type"] == "failed" and final["error"]["code"] == code
    assert "kaput" not in final["error"]["message"]  # internals are logged, not shown
    nxt = await engine.submit_ok(samples.png(), [samples.png()])
    assert (await engine.wait(nxt["job_id"]))["type"] == "done"
    assert engine.app[WORKERS_KEY][0].state == "ready"


async def test_worker_that_cannot_load_is_reported(start_engine, samples, fake_controls):
    controls = fake_controls
    controls.warm_up_error = FileNotFoundError("weights missing")
    engine = await start_engine(controls=controls)
    await engine.wait_for(lambda: engine.app[WORKERS_KEY][0].state == "broken")
    ready = await engine.get_json("/readyz", status=503, headers={})
    assert ready["status"] == "unavailable" and "weights missing" in ready["workers"][0]["error"]
    assert (await engine.get_json("/healthz", headers={}))["status"] == "ok"
    async with await engine.submit(samples.png(), [samples.png()]) as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "engine_unavailable"


async def test_shutdown_cancels_after_grace_and_closes_streams(start_engine, samples):
    engine = await start_engine(shutdown_grace=0.2)
    running = await _held(engine, samples)
    queued = await engine.submit_ok(samples.png(), [samples.png()], requester="q")
    watches = [asyncio.create_task(engine.events(b["job_id"])) for b in (running, queued)]
    await engine.wait_for(lambda: all(engine.job(b["job_id"])._watchers for b in (running, queued)))
    await engine.client.server.close()  # what SIGTERM does in run_app: stop, on_shutdown, cleanup
    run_events, queued_events = await asyncio.gather(*watches)
    assert run_events[-1]["type"] == "cancelled" and run_events[-1]["error"]["code"] == "engine_shutdown"
    assert queued_events[-1]["type"] == "cancelled" and queued_events[-1]["error"]["code"] == "engine_shutdown"
    assert engine.app[WORKERS_KEY][0].state == "stopped"


async def test_shutdown_lets_the_running_job_finish_within_grace(start_engine, samples):
    engine = await start_engine(shutdown_grace=10)
    running = await _held(engine, samples)
    watch = asyncio.create_task(engine.events(running["job_id"]))
    await engine.wait_for(lambda: engine.job(running["job_id"])._watchers)
    closing = asyncio.create_task(engine.client.server.close())
    await engine.wait_for(lambda: engine.app[QUEUE_KEY].closed)
    engine.fake.release.set()
    await closing
    events = await watch
    assert events[-1]["type"] == "done"
    assert engine.app[JOBS_KEY].get(running["job_id"]).result is not None


async def test_intake_stops_at_shutdown(start_engine, samples):
    engine = await start_engine(shutdown_grace=5)
    await _held(engine, samples)
    closing = asyncio.create_task(engine.client.server.close())
    await engine.wait_for(lambda: engine.app[QUEUE_KEY].closed)
    # The listener is gone, but the app refuses work even from a connection that is still open.
    from nst_engine.service.handlers import _check_intake
    from nst_engine.service.middlewares import ApiError

    with pytest.raises(ApiError) as err:
        _check_intake(engine.app, "x")
    assert err.value.status == 503 and err.value.code == "shutting_down"
    engine.fake.release.set()
    await closing


async def test_many_watchers_and_slow_readers(start_engine, samples):
    engine = await start_engine(max_steps=200)
    engine.fake.hold = True
    body = await engine.submit_ok(samples.png(), [samples.png()], steps=200)
    tasks = [asyncio.create_task(engine.events(body["job_id"])) for _ in range(5)]
    await engine.wait_for(lambda: len(engine.job(body["job_id"])._watchers) == 5)
    engine.fake.release.set()
    results = await asyncio.gather(*tasks)
    for events in results:
        assert events[-1]["type"] == "done"
        assert [e for e in events if e["type"] == "progress"][-1]["iteration"] == 200
