"""`python -m nst_engine work`: settings, logging, then the broker's pullers (broker.py) until SIGTERM.

Bad settings, a wrong broker address, refused credentials or a broker without JetStream: one line on stderr
and a non-zero exit. The settings are checked before torch is imported, so those answers come at once.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from .settings import EngineSettings, SettingsError

if TYPE_CHECKING:
    from .worker import StylizerFactory


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nst_engine work",
        description="Pull style-transfer jobs from a NATS JetStream broker, one worker per device (settings come "
                    "from ENGINE_* environment variables; see docs/self-hosting.md).",
    )
    p.add_argument("--broker", help="nats://host:4222 or tls://host:4222 (overrides ENGINE_BROKER_URL)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING... (overrides ENGINE_LOG_LEVEL)")
    return p


def load_settings(argv: list[str], environ: Any) -> EngineSettings:
    """Environment, then command-line overrides; raises SettingsError (argparse exits on bad flags)."""
    args = _parser().parse_args(argv)
    settings = EngineSettings.from_env(environ)
    overrides = {k: v for k, v in (("broker_url", args.broker), ("log_level", args.log_level)) if v is not None}
    settings = dataclasses.replace(settings, **overrides) if overrides else settings
    if settings.broker_url is None:
        raise SettingsError(["give the broker with --broker nats://host:4222 or ENGINE_BROKER_URL"])
    return settings


def main(argv: list[str], *, stylizer_factory: StylizerFactory | None = None) -> int:
    try:
        settings = load_settings(argv, os.environ)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"nst_engine work: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Deferred: torch comes with these, and the answers above should not wait for it.
    from ..core.devices import DeviceUnavailable
    from .broker import run
    from .jetstream import BrokerError

    try:
        return asyncio.run(run(settings, stylizer_factory=stylizer_factory))
    except BrokerError as exc:
        print(f"nst_engine work: {exc}", file=sys.stderr)
        return 1
    except DeviceUnavailable as exc:
        print(f"nst_engine work: ENGINE_DEVICE: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
