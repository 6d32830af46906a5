"""End to end with the real model: `python -m nst_engine work` (VGG19 on the CPU) runs a 32 px job from the queue."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.engine.broker import BrokerEngine
from tests.broker.support import follow, spec  # isort: skip


@pytest.mark.asyncio
async def test_the_real_stylizer_through_the_broker(engine: BrokerEngine, workers) -> None:
    workers.start(real=True)
    await engine.submit(spec(size=32, steps=4, preset="mosaic", key="real-0"))
    events = await follow(engine, "real-0", timeout=240)
    final = events[-1]
    assert final["type"] == "done", final
    assert final["styles"] == ["preset:mosaic"] and final["stats"]["iterations"] > 0
    image = Image.open(io.BytesIO(await engine.result("nats", "real-0")))
    assert max(image.size) == 32
    assert "mosaic" in await engine.presets()  # the workers' builtin presets are listed for the bot
