"""The engine service with the real Stylizer (VGG19 on the CPU), at tiny sizes: size 32, 2 steps."""
from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from PIL import Image

from nst_engine.service.keys import WORKERS_KEY

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[3]


async def _ready(engine) -> None:
    await engine.wait_for(lambda: all(w.state != "starting" for w in engine.app[WORKERS_KEY]), timeout=120)
    ready = await engine.get_json("/readyz", headers={})
    assert ready["status"] == "ready", ready


async def test_real_job_with_alpha_and_progress(start_engine, samples):
    engine = await start_engine(fake=False, default_size=32, default_steps=2)
    await _ready(engine)
    body = await engine.submit_ok(samples.rgba_png(48, 32), [samples.jpeg(40, 40)], requester="u", seed=1)
    events = await engine.events(body["job_id"], preview=32)
    final = events[-1]
    assert final["type"] == "done", final
    assert final["device"] == "cpu"
    async with engine.client.get(final["result"]["url"], headers=engine.auth) as resp:
        assert resp.status == 200
        im = Image.open(io.BytesIO(await resp.read()))
        im.load()
    assert im.mode == "RGBA" and im.size == (32, 21)
    assert np.asarray(im.getchannel("A"))[10, 0] < 30


async def test_real_preset_job_reuses_style_targets(start_engine, samples, procedural):
    engine = await start_engine(fake=False, default_size=32, default_steps=2)
    await _ready(engine)
    name = procedural.NAMES[0]
    for _ in range(2):
        body = await engine.submit_ok(samples.jpeg(48, 32), presets=[name], format="jpeg")
        final = await engine.wait(body["job_id"])
        assert final["type"] == "done", final
        assert final["result"]["content_type"] == "image/jpeg"
    stylizer = engine.app[WORKERS_KEY][0]._stylizer
    cache = getattr(stylizer, "style_cache", None)
    if cache is not None:  # one entry for the preset at this size: computed once, reused
        assert len(cache) == 1


async def test_real_cancel_and_awkward_inputs(start_engine, samples):
    engine = await start_engine(fake=False, default_size=32, default_steps=2, max_steps=300, max_size=64)
    await _ready(engine)
    body = await engine.submit_ok(samples.png(), [samples.png()], steps=300, size=64)
    await engine.wait_for(lambda: engine.job(body["job_id"]).progress is not None, timeout=60)
    async with engine.client.delete(f"/v1/jobs/{body['job_id']}", headers=engine.auth) as resp:
        assert resp.status == 202
    final = await engine.wait(body["job_id"])
    assert final["type"] == "cancelled"
    for kind in ("cmyk_jpeg", "png16"):  # the fake-stylizer tests cover the rest of the catalogue
        data = getattr(samples, kind)()
        body = await engine.submit_ok(data, [data])
        assert (await engine.wait(body["job_id"]))["type"] == "done", kind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_serve_process_stops_cleanly_on_sigterm(tmp_path, samples, engine_token, auth_headers):
    port = _free_port()
    env = {**os.environ, "ENGINE_TOKEN": engine_token, "ENGINE_DEVICE": "cpu", "ENGINE_PRESETS_DIR": str(tmp_path),
           "ENGINE_MAX_SIZE": "32", "ENGINE_DEFAULT_SIZE": "32", "ENGINE_DEFAULT_STEPS": "2",
           "ENGINE_SHUTDOWN_GRACE": "5", "PYTHONWARNINGS": "error::ResourceWarning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nst_engine", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, proc.stdout.read().decode()
                try:
                    async with session.get(f"{base}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "engine did not become ready"
                await asyncio.sleep(0.2)
            async with session.get(f"{base}/v1/presets") as resp:
                assert resp.status == 401
            form = aiohttp.FormData()
            form.add_field("content", samples.jpeg(), filename="c.jpg")
            form.add_field("style", samples.png(), filename="s.png")
            async with session.post(f"{base}/v1/jobs", data=form, headers=auth_headers) as resp:
                assert resp.status == 202
                job_id = (await resp.json())["job_id"]
            async with session.get(f"{base}/v1/jobs/{job_id}/events", headers=auth_headers) as resp:
                lines = [line async for line in resp.content if line.strip()]
            assert b'"type":"done"' in lines[-1]
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "shutting down" in text and "engine stopped" in text
    assert engine_token not in text
    assert "Traceback" not in text
