"""Jobs through a real broker and real worker processes: the happy path, fairness, the wire, bad input."""
from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from bot.engine.broker import BrokerEngine
from bot.errors import EngineError
from tests.broker.support import follow, png, spec, wait_until  # isort: skip

pytestmark = pytest.mark.asyncio


async def test_one_job_runs_with_the_http_stream_vocabulary(engine: BrokerEngine, workers) -> None:
    workers.start()
    submitted = await engine.submit(spec(steps=5), key="job-a-0")
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
