"""Misconfiguration: one clear line and a non-zero exit, no traceback (the worker); BrokerRefused (the bot)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.engine.broker import BrokerAddress, BrokerEngine, BrokerRefused
from tests.broker.support import ROOT, TOKEN, NatsServer, free_port  # isort: skip


def run_worker(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PYTHONPATH": str(ROOT), "ENGINE_DEVICE": "cpu", "ENGINE_WARM_UP": "false", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "nst_engine", "work", *args], env={**base, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def one_clear_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def server_without_jetstream(tmp_path: Path):
    server = NatsServer(tmp_path / "js", tmp_path / "log", jetstream=False, token=None)
    server.start()
    yield server
    server.kill()


def test_worker_nothing_listening() -> None:
    line = one_clear_line(run_worker("--broker", f"nats://127.0.0.1:{free_port()}"))
    assert "nothing is listening at nats://127.0.0.1:" in line


def test_worker_refused_credentials(nats_server) -> None:
    result = run_worker("--broker", nats_server.url, ENGINE_BROKER_TOKEN="not-the-right-token-at-all")
    assert "refused the credentials" in one_clear_line(result)
    assert "not-the-right-token" not in result.stderr + result.stdout


def test_worker_broker_without_jetstream(server_without_jetstream) -> None:
    line = one_clear_line(run_worker("--broker", server_without_jetstream.url))
    assert "does not have JetStream enabled" in line


def test_worker_bad_url_and_missing_credentials() -> None:
    line = one_clear_line(run_worker("--broker", "http://example.invalid:4222"))
    assert "ENGINE_BROKER_URL must look like nats://host:4222" in line
    line = one_clear_line(run_worker("--broker", "nats://10.1.2.3:4222"))
    assert "ENGINE_BROKER_TOKEN (or ENGINE_BROKER_USER and _PASSWORD) is required" in line
    assert "give the broker with --broker" in one_clear_line(run_worker())


@pytest.mark.asyncio
async def test_bot_refused_credentials_and_no_jetstream(nats_server, server_without_jetstream) -> None:
    with pytest.raises(BrokerRefused, match="refused the credentials"):
        await BrokerEngine(BrokerAddress(nats_server.url, token="not-the-right-token-at-all")).start()
    with pytest.raises(BrokerRefused, match="does not have JetStream"):
        await BrokerEngine(BrokerAddress(server_without_jetstream.url)).start()
    ok = BrokerEngine(BrokerAddress(nats_server.url, token=TOKEN))
    await ok.start()
    assert ok.connected
    await ok.close()


def run_bot(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "DISCORD_TOKEN": "not-used-the-broker-fails-first"}
    return subprocess.run([sys.executable, "-m", "bot"], env={**base, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_bot_stops_with_one_line_on_refused_credentials(nats_server, tmp_path: Path) -> None:
    result = run_bot(tmp_path, ENGINE_BROKER_URL=nats_server.url, ENGINE_BROKER_TOKEN="not-the-right-token-at-all")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "refused the credentials" in errors[0]
    assert "not-the-right-token" not in result.stderr
