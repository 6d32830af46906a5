"""The embedded engine: with no ENGINE_URLS, the bot runs `python -m nst_engine serve` itself, on loopback, on a
free port, with a random token, waits for /readyz, and stops it (SIGTERM, then kill) when the bot stops.

It is supervised: when the engine process dies on its own (a crash, an OOM kill, someone's SIGTERM) it is started
again on the same port with the same token, after a backoff that grows while it keeps dying. Jobs it held come
back as unknown (404) and the runner resubmits them. The child is tied to the bot: on Linux the kernel kills it
when the bot dies, even by kill -9, so no old engine is left holding memory and a port.

The child inherits the environment, so ENGINE_* settings (device, presets directory, limits) apply to it.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Mapping

import aiohttp

from ..backoff import Backoff

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# The engine gives its running job up to ENGINE_SHUTDOWN_GRACE (30 s) after SIGTERM; then we kill it.
STOP_TIMEOUT_S = 45.0
POLL_S = 0.25
# Restarts after a crash: the first waits this long, each next one twice as long, up to the cap.
RESTART_FIRST_S, RESTART_MAX_S = 1.0, 60.0
# An engine that stayed up this long was healthy: its next crash restarts it after RESTART_FIRST_S again.
STABLE_AFTER_S = 120.0
# linux/prctl.h: deliver a signal to this process when the thread that forked it dies.
_PR_SET_PDEATHSIG = 1


class EngineStartError(RuntimeError):
    """The embedded engine exited or did not get ready in time; the message is one line for the log."""


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def engine_installed() -> bool:
    """Whether `nst_engine` can be imported here (the bot-only image has no engine and no torch)."""
    return importlib.util.find_spec("nst_engine") is not None


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function that makes the kernel SIGKILL the child when the bot dies (Linux only).

    SIGKILL, not SIGTERM: once the bot is gone nobody can fetch the engine's results, so draining its running
    job would only hold the memory (and GPU) the next bot's engine needs."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent, sigkill = os.getpid(), int(signal.SIGKILL)

    def preexec() -> None:  # runs in the child between fork and exec: no logging, no locks
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:  # the bot died before prctl took effect
            os._exit(1)

    return preexec


class EmbeddedEngine:
    def __init__(self, *, environ: Mapping[str, str] | None = None, python: str = sys.executable,
                 start_timeout: float = 300.0, restart_first: float = RESTART_FIRST_S,
                 restart_max: float = RESTART_MAX_S) -> None:
        self.python = python
        self.start_timeout = start_timeout
        self.restart_first, self.restart_max = restart_first, max(restart_first, restart_max)
        self.port = free_port()
        self.token = secrets.token_urlsafe(32)
        self.url = f"http://{HOST}:{self.port}"
        base = dict(os.environ if environ is None else environ)
        self._env = {**base, "ENGINE_HOST": HOST, "ENGINE_PORT": str(self.port), "ENGINE_TOKEN": self.token}
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    def __repr__(self) -> str:  # never the token
        return f"<EmbeddedEngine {self.url} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start the process, wait until /readyz answers 200 (EngineStartError otherwise), then supervise it."""
        log.info("starting the embedded engine on %s", self.url)
        await self._launch(session)
        self._supervisor = asyncio.create_task(self._supervise(session), name="nst-engine-supervisor")

    async def _launch(self, session: aiohttp.ClientSession) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "nst_engine", "serve", "--host", HOST, "--port", str(self.port), env=self._env,
            stdin=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent(),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while loop.time() < deadline:
            if self._proc.returncode is not None:
                raise EngineStartError(f"the embedded engine exited with status {self._proc.returncode} "
                                       "(its log lines above say why)")
            try:
                async with session.get(f"{self.url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        log.info("the embedded engine is ready (pid %d)", self._proc.pid)
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(POLL_S)
        await self._terminate()
        raise EngineStartError(f"the embedded engine was not ready within {self.start_timeout:g} s")

    async def _supervise(self, session: aiohttp.ClientSession) -> None:
        """Start the engine again whenever it dies without being asked to, with a growing backoff."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.restart_first, self.restart_max)
        up_since = loop.time()
        while not self._stopping:
            assert self._proc is not None
            status = await self._proc.wait()
            if self._stopping:
                return
            if loop.time() - up_since >= STABLE_AFTER_S:
                backoff.reset()
            delay = backoff.next()
            log.warning("the embedded engine (pid %d) exited with status %s; starting it again in %.0f s",
                        self._proc.pid, status, delay)
            await asyncio.sleep(delay)
            try:
                await self._launch(session)
            except EngineStartError as exc:
                log.error("%s", exc)
                continue  # _launch left an exited process (or killed it): the loop waits and tries again
            self.restarts += 1
            up_since = loop.time()

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._terminate()

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("the embedded engine did not stop within %g s; killing it", STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("the embedded engine stopped (status %s)", proc.returncode)
