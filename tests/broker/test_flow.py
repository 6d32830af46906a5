"""Jobs through a real broker and real worker processes: the happy path, fairness, the wire, bad input."""
from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from bot.engine.broker import BrokerEngine
from bot.errors import EngineError
from tests.broker.support import follow, png, spec, wait_until  # isort: skip


@pytest.mark.asyncio
async def test_one_job_runs_with_the_http_stream_vocabulary(engine: BrokerEngine, workers) -> None:
    workers.start()
    submitted = await engine.submit(spec(steps=5, key="job-a-0"))
    events = await follow(engine, submitted.job_id)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "status" and kinds[-1] == "done", kinds
    assert "started" in kinds and "progress" in kinds
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["iteration"] == progress[-1]["total"] == 5
    final = events[-1]
    assert final["job_id"] == "job-a-0" and final["result"]["key"] == "job-a-0/result"
    data = await engine.result("nats", "job-a-0")
    assert Image.open(io.BytesIO(data)).size == (32, 21)
    assert (await engine.status("nats", "job-a-0"))["type"] == "done"  # the final state, from KV


@pytest.mark.asyncio
async def test_twenty_jobs_from_five_users_on_two_workers_fair_and_none_lost(engine: BrokerEngine, workers) -> None:
    workers.start(FAKE_STEP_S="0.02")
    workers.start(FAKE_STEP_S="0.02")
    starts: list[str] = []

    async def user(name: str) -> list[str]:
        finals = []
        for k in range(4):  # the bot's rule: one job per user in the engine at a time
            key = f"{name}-job{k}"
            await engine.submit(spec(name, steps=8, key=key))
            async for event in engine.wire_events(key):
                if event["type"] == "started":
                    starts.append(name)
                final = event
            finals.append(final["type"])
        return finals

    results = await asyncio.wait_for(asyncio.gather(*(user(f"u{i}") for i in range(5))), 180)
    assert results == [["done"] * 4] * 5
    assert sorted(starts) == sorted([f"u{i}" for i in range(5)] * 4)
    # Round-robin: at every point of the start order, no user is more than two jobs ahead of another.
    for n in range(1, len(starts) + 1):
        counts = [starts[:n].count(f"u{i}") for i in range(5)]
        assert max(counts) - min(counts) <= 2, starts
    assert (await engine.queue())["queued"] == 0


@pytest.mark.asyncio
async def test_bad_images_are_refused_before_anything_is_uploaded(engine: BrokerEngine) -> None:
    from tests.engine.conftest import Samples  # isort: skip

    with pytest.raises(EngineError) as err:
        await engine.submit(spec(content=Samples.text_as_png(), key="bad-0"))
    assert err.value.code == "not_an_image"
    assert "The content image is not an image file I can read" in err.value.message
    with pytest.raises(EngineError) as err:
        await engine.submit(spec(content=Samples.png_header_only(30000, 30000), key="bad-1"))
    assert err.value.code == "too_many_pixels" and "the limit is 40 megapixels" in err.value.message
    with pytest.raises(EngineError) as err:
        await engine.submit(spec(content=b"\0" * (25 * 2**20 + 1), key="bad-2"))
    assert err.value.code == "file_too_large" and "larger than the 25 MiB limit" in err.value.message
    files = await engine._js.object_store("nst-files")
    with pytest.raises(Exception, match="NotFound|NoObjects|not found"):
        await files.get_info("bad-0/content")


def test_the_bot_and_the_engine_name_the_same_things() -> None:
    from bot.engine import broker as bot_side
    from nst_engine.service import jetstream as engine_side

    names = ("STREAM", "JOB_SUBJECT", "CONSUMER", "EVENTS_SUBJECT", "CANCEL_SUBJECT", "FILES_BUCKET",
             "PRESETS_BUCKET", "JOBS_KV", "WORKERS_KV", "DUPLICATE_WINDOW_S", "FILES_TTL_S", "JOBS_TTL_S",
             "WORKER_TTL_S", "MAX_JOB_MESSAGE_BYTES")
    assert {n: getattr(bot_side, n) for n in names} == {n: getattr(engine_side, n) for n in names}


@pytest.mark.asyncio
async def test_presets_are_shared_and_queue_lists_the_workers(engine: BrokerEngine, workers, tmp_path) -> None:
    from bot.cogs.admin import broker_overview

    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "redish.png").write_bytes(png((220, 30, 30), (40, 40)))
    workers.start()  # uploads its directory's preset to the broker's bucket
    # The bucket's preset and the worker's generated ones (from its registry entry).
    await wait_until(lambda: _presets_with(engine, {"redish", "mosaic", "swirls"}), 60, "the shared presets")
    await engine.submit(spec(preset="redish", key="preset-0"))
    final = (await follow(engine, "preset-0"))[-1]
    assert final["type"] == "done" and final["styles"] == ["preset:redish"]
    assert await engine.preset_image("redish", 16) is not None
    text = await broker_overview(3, engine)
    assert "3 unfinished job(s) here; 0 waiting in the shared queue; 1 worker(s):" in text
    assert " cpu: idle, 1 done" in text


async def _presets_with(engine: BrokerEngine, wanted: set[str]) -> bool:
    return wanted <= set(await engine.presets())


@pytest.mark.asyncio
async def test_position_and_eta_come_from_the_stream_and_the_workers(engine: BrokerEngine, workers) -> None:
    workers.start(FAKE_STEP_S="0.05")
    await engine.submit(spec(steps=10, key="warm-0"))
    await follow(engine, "warm-0")  # the worker now knows its average job time
    for i in range(3):
        await engine.submit(spec(f"user-{i}", steps=60, key=f"line-{i}"))  # 3 s each: longer than a poll
    events = await follow(engine, "line-2")
    status, positions = events[0], [e for e in events if e["type"] == "position"]
    assert status["state"] == "queued" and status["position"] >= 2 and status["eta_s"] > 0
    assert positions and positions[-1]["position"] == 1 and positions[-1]["eta_s"] > 0
    assert [p["position"] for p in positions] == sorted((p["position"] for p in positions), reverse=True)
    assert events[-1]["type"] == "done"


@pytest.mark.asyncio
async def test_upload_limits_follow_the_workers(engine: BrokerEngine, workers) -> None:
    workers.start(ENGINE_MAX_PIXELS="1000")
    await wait_until(lambda: _workers(engine), 60, "the worker")
    with pytest.raises(EngineError) as err:
        await engine.submit(spec(content=png(size=(48, 32)), key="limited-0"))  # 1536 pixels
    assert err.value.code == "too_many_pixels" and "the limit is 0.001 megapixels" in err.value.message


async def _workers(engine: BrokerEngine) -> bool:
    return bool(await engine.workers())


@pytest.mark.asyncio
async def test_both_transports_fit_the_bots_one_interface(engine: BrokerEngine) -> None:
    import aiohttp

    from bot.engine.base import Engine
    from bot.engine.http import EngineClient

    async with aiohttp.ClientSession() as session:
        assert isinstance(EngineClient(session, "http://127.0.0.1:9"), Engine)
    assert isinstance(engine, Engine)
