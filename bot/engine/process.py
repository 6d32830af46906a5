"""The embedded engine: with no ENGINE_URLS, the bot runs `python -m nst_engine serve` itself, on loopback, on a
free port, with a random token, waits for /readyz, and stops it (SIGTERM, then kill) when the bot stops.

The child inherits the environment, so ENGINE_* settings (device, presets directory, limits) apply to it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
from collections.abc import Mapping

import aiohttp

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# The engine gives its running job up to ENGINE_SHUTDOWN_GRACE (30 s) after SIGTERM; then we kill it.
STOP_TIMEOUT_S = 45.0
POLL_S = 0.25


class EngineStartError(RuntimeError):
    """The embedded engine exited or did not get ready in time; the message is one line for the log."""


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedEngine:
    def __init__(self, *, environ: Mapping[str, str] | None = None, python: str = sys.executable,
                 start_timeout: float = 300.0) -> None:
        self.python = python
        self.start_timeout = start_timeout
        self.port = free_port()
        self.token = secrets.token_urlsafe(32)
        self.url = f"http://{HOST}:{self.port}"
        base = dict(os.environ if environ is None else environ)
        self._env = {**base, "ENGINE_HOST": HOST, "ENGINE_PORT": str(self.port), "ENGINE_TOKEN": self.token}
        self._proc: asyncio.subprocess.Process | None = None

    def __repr__(self) -> str:  # never the token
        return f"<EmbeddedEngine {self.url} pid={self._proc.pid if self._proc else None}>"

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start the process and wait until /readyz answers 200 (EngineStartError otherwise)."""
        log.info("starting the embedded engine on %s", self.url)
        self._proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "nst_engine", "serve", "--host", HOST, "--port", str(self.port), env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
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
        await self.stop()
        raise EngineStartError(f"the embedded engine was not ready within {self.start_timeout:g} s")

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
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
