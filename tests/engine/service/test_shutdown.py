"""Shutting down and hanging up: SIGTERM to a real `serve` process drains while it still answers, and a client
that drops its upload is a client abort (no traceback, not a 5xx, its own metric label)."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def _form(content: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("content", content, filename="c.png")
    form.add_field("preset", "mosaic")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


async def test_sigterm_drains_while_still_answering(tmp_path, samples, engine_token, auth_headers):
    port = _free_port()
    env = {**os.environ, "ENGINE_TOKEN": engine_token, "ENGINE_DEVICE": "cpu", "ENGINE_PRESETS_DIR": str(tmp_path),
           "ENGINE_MAX_SIZE": "64", "ENGINE_MAX_STEPS": "200", "ENGINE_SHUTDOWN_GRACE": "120",
           "ENGINE_PROGRESS_INTERVAL": "0.1", "PYTHONPATH": str(REPO)}
    log_path = tmp_path / "engine.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "nst_engine", "serve", "--host", "127.0.0.1", "--port",
                                 str(port)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async def ready() -> bool:
                assert proc.poll() is None, log_path.read_text()
                try:
                    async with session.get(f"{base}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await _until(ready, 120, "the engine to get ready")
            async with session.post(f"{base}/v1/jobs", data=_form(samples.png(64, 48), size="64", steps="40"),
                                    headers=auth_headers) as resp:
                assert resp.status == 202
                job_id = (await resp.json())["job_id"]
            async with session.get(f"{base}/v1/jobs/{job_id}/events", headers=auth_headers) as events:
                async for line in events.content:  # until the job really runs
                    if line.strip() and json.loads(line)["type"] == "progress":
                        break
                proc.send_signal(signal.SIGTERM)

                async def refused() -> bool:  # the listener is still open: new work is refused politely
                    async with session.post(f"{base}/v1/jobs", data=_form(samples.png()),
                                            headers=auth_headers) as resp:
                        if resp.status == 202:
                            return False
                        assert resp.status == 503, await resp.text()
                        assert (await resp.json())["error"]["code"] == "shutting_down"
                        assert float(resp.headers["Retry-After"]) > 0
                        return True

                await _until(refused, 30, "the engine to refuse new jobs after SIGTERM")
                final = None
                async for line in events.content:
                    if line.strip() and (event := json.loads(line))["type"] in ("done", "failed", "cancelled"):
                        final = event
                        break
            assert final is not None and final["type"] == "done", final
            async with session.get(f"{base}/v1/jobs/{job_id}/result", headers=auth_headers) as resp:
                assert resp.status == 200 and resp.content_type == "image/png"
                assert len(await resp.read()) > 100
        code = await asyncio.to_thread(proc.wait, 60)
        output = log_path.read_text()
        assert code == 0, output
        assert "Traceback" not in output
        assert '"GET /readyz HTTP/1.1" 200' not in output, "health probes are logged at DEBUG, not INFO"
        assert '"POST /v1/jobs HTTP/1.1" 503' in output  # real traffic still is
        assert re.search(r"shutting down: 0 queued job\(s\) cancelled, 1 running", output), output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


async def test_a_dropped_upload_is_a_client_abort_not_an_error(engine_settings, samples, caplog):
    from aiohttp import web

    from nst_engine.service.app import create_app
    from nst_engine.service.settings import EngineSettings
    from tests.engine.conftest import AUTH

    # The server as `serve` runs it (TestServer cancels the handler on a hang-up, which hides what happens).
    runner = web.AppRunner(create_app(EngineSettings(**{**engine_settings, "warm_up": False})))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        body = samples.png(256, 256)
        boundary = "xyzzy"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"c.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode()
        total = len(head) + len(body) + len(f"\r\n--{boundary}--\r\n")
        caplog.set_level(logging.INFO)
        _, writer = await asyncio.open_connection(host, port)
        writer.write((f"POST /v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {AUTH['Authorization']}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {total}\r\n\r\n"
                      ).encode() + head + body[: len(body) // 2])
        await writer.drain()
        async with aiohttp.ClientSession() as session:
            async def metrics() -> str:
                async with session.get(f"http://{host}:{port}/metrics", headers=AUTH) as resp:
                    return await resp.text()

            async def reading() -> bool:  # the handler is waiting for the rest of the file
                return "nst_rejected_requests_total" in await metrics() and "POST /v1/jobs" not in caplog.text

            await _until(reading, 10, "the upload to be read")
            writer.close()  # hang up halfway through the file
            await writer.wait_closed()

            async def counted() -> bool:
                return 'nst_rejected_requests_total{code="client_aborted"} 1.0' in await metrics()

            await _until(counted, 10, "the abort to be counted")
            assert 'nst_rejected_requests_total{code="internal_error"} 0.0' in await metrics()
    finally:
        await runner.cleanup()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    assert "the client hung up" in caplog.text
    assert '"POST /v1/jobs HTTP/1.1" 499' in caplog.text
