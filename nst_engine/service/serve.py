"""`python -m nst_engine serve`: settings from the environment, logging, then the aiohttp app until SIGTERM.

SIGTERM or SIGINT drains before anything closes: the listener stays open, new jobs get `503 shutting_down`
with Retry-After, queued jobs are cancelled, the running job gets ENGINE_SHUTDOWN_GRACE seconds (cancelled
after that), and a result finished meanwhile stays fetchable for RESULT_LINGER_S. Only then do the listener
and the connections close.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys

from aiohttp import web
from aiohttp.web_log import AccessLogger

from .settings import EngineSettings, SettingsError

log = logging.getLogger("nst_engine.service.serve")

# After the drain, open requests get this long before connections close.
HTTP_SHUTDOWN_TIMEOUT = 10.0
# A job that finished during the drain: its client fetches the result right after the final event (well
# under a second); the listener stays open this long for it.
RESULT_LINGER_S = 5.0
# Probes that come every few seconds: logged at DEBUG, so the INFO log shows real traffic.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nst_engine serve",
        description="Run the engine HTTP service (settings come from ENGINE_* environment variables; "
                    "see docs/engine-api.md).",
    )
    p.add_argument("--host", help="address to listen on (overrides ENGINE_HOST)")
    p.add_argument("--port", type=int, help="port to listen on (overrides ENGINE_PORT)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING... (overrides ENGINE_LOG_LEVEL)")
    return p


def _fail(problems: list[str]) -> int:
    for problem in problems:
        print(f"nst_engine serve: {problem}", file=sys.stderr)
    return 2


def load_settings(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> EngineSettings:
    """Environment, then command-line overrides; raises SettingsError (argparse exits on bad flags)."""
    args = _parser().parse_args(argv)
    settings = EngineSettings.from_env(environ)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("log_level", args.log_level))
                 if v is not None}
    return dataclasses.replace(settings, **overrides) if overrides else settings


def main(argv: list[str]) -> int:
    try:
        settings = load_settings(argv, os.environ)
    except SettingsError as exc:
        return _fail(exc.problems)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Deferred: importing the app pulls in torch, which `serve --help` and bad settings should not wait for.
    from ..core.devices import DeviceUnavailable, compile_unavailable
    from .app import create_app
    from .worker import worker_devices

    try:
        devices = worker_devices(settings.device)
    except DeviceUnavailable as exc:  # e.g. ENGINE_DEVICE=cuda (the GPU stack) and the GPU is not visible
        return _fail([f"ENGINE_DEVICE={settings.device}: {exc}"])
    if settings.compile:
        reasons = {compile_unavailable(device.split(":")[0]) for device in devices} - {None}
        if reasons:
            return _fail([f"ENGINE_COMPILE=true: {min(str(r) for r in reasons)}; set ENGINE_COMPILE=false"])
    log.info(
        "engine listening on http://%s:%d (%s; devices: %s; presets: %s)",
        settings.host, settings.port, "token required" if settings.auth_required else "loopback only, no token",
        ", ".join(devices), settings.presets_dir,
    )
    try:
        asyncio.run(_serve(create_app(settings), settings))
    except OSError as exc:  # e.g. the port is taken
        return _fail([f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"])
    log.info("engine stopped")
    return 0


class QuietAccessLogger(AccessLogger):
    """aiohttp's access log, with health and metrics probes at DEBUG."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.path in QUIET_PATHS and response.status < 400:
            if self.logger.isEnabledFor(logging.DEBUG):
                self.logger.debug("%s %s %d", request.method, request.path, response.status)
            return
        super().log(request, response, time)


async def _serve(app: web.Application, settings: EngineSettings) -> None:
    """Serve until SIGTERM/SIGINT; drain while still listening, then close."""
    from .app import drain

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the (slow) start-up, so a stop then is clean too
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log_class=QuietAccessLogger, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        await stop.wait()
        log.info("stop signal received: draining (new jobs get 503 shutting_down)")
        if await drain(app):
            await asyncio.sleep(RESULT_LINGER_S)
    finally:
        await runner.cleanup()  # closes the listener and the connections; the app's shutdown hooks and cleanup
