"""`python -m nst_engine serve`: settings from the environment, logging, then the aiohttp app until SIGTERM.

SIGTERM/SIGINT (handled by `web.run_app`) stop the listener; the app's shutdown hook then refuses new jobs,
cancels queued ones, gives the running job ENGINE_SHUTDOWN_GRACE seconds and cancels it after that.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from aiohttp import web

from .settings import EngineSettings, SettingsError

log = logging.getLogger("nst_engine.service.serve")

# After the shutdown hook has drained the jobs, open requests get this long before connections close.
HTTP_SHUTDOWN_TIMEOUT = 10.0


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
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT,
            print=None,
            handle_signals=True,
        )
    except OSError as exc:  # e.g. the port is taken
        return _fail([f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"])
    log.info("engine stopped")
    return 0
