"""`python -m bot`: settings (environment, then `.env`), logging, then the bot until Ctrl-C / SIGTERM.

With no ENGINE_URLS the bot starts a local engine process first (embedded default), so this one command
runs everything on one machine. With ENGINE_BROKER_URL it publishes jobs to a NATS JetStream queue instead,
and GPU workers on any machine (`python -m nst_engine work`) pull them.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys

import aiohttp

from .client import StyleBot
from .engine.broker import BrokerAddress, BrokerEngine, BrokerRefused
from .engine.http import EngineClient
from .engine.process import EmbeddedEngine, EngineStartError
from .journal import Journal
from .runner import PREVIEW_SIDE
from .settings import BotSettings, SettingsError, environment

log = logging.getLogger("bot")


class _RedactToken(logging.Filter):
    """Belt and braces: the token is never logged on purpose, but a library might echo it in an error."""

    def __init__(self, *secrets: str | None) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            for s in self.secrets:
                message = message.replace(s, "[redacted]")
            record.msg, record.args = message, ()
        return True


def setup_logging(settings: BotSettings) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RedactToken(settings.discord_token, settings.engine_token, settings.engine_broker_token,
                                   settings.engine_broker_password))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.getLogger("discord").setLevel(max(logging.INFO, root.level))


async def run(settings: BotSettings) -> int:
    async with aiohttp.ClientSession() as session:
        if settings.engine_broker_url is not None:
            return await _run_with_broker(settings, session)
        embedded = None
        url, token = settings.engine_url, settings.engine_token
        if settings.embedded_engine:
            embedded = EmbeddedEngine(start_timeout=settings.engine_start_timeout)
            try:
                await embedded.start(session)
            except EngineStartError as exc:
                log.error("%s", exc)
                return 1
            url, token = embedded.url, embedded.token
        try:
            journal = await Journal.open(settings.db_path)
            async with journal:
                assert url is not None
                engine = EngineClient(session, url, token)
                async with StyleBot(settings, session=session, journal=journal, engine=engine) as bot:
                    await bot.start(settings.discord_token)
        finally:
            if embedded is not None:
                await embedded.stop()
    return 0


async def _run_with_broker(settings: BotSettings, session: aiohttp.ClientSession) -> int:
    """GPU workers pull the jobs from a NATS JetStream queue; an unreachable broker only means "offline"."""
    assert settings.engine_broker_url is not None
    address = BrokerAddress(settings.engine_broker_url, settings.engine_broker_token, settings.engine_broker_user,
                            settings.engine_broker_password, settings.engine_broker_tls_ca)
    engine = BrokerEngine(address, preview_side=PREVIEW_SIDE if settings.preview_interval > 0 else 0)
    try:
        await engine.start()
    except BrokerRefused as exc:
        log.error("%s", exc)
        return 1
    try:
        journal = await Journal.open(settings.db_path)
        async with journal:
            async with StyleBot(settings, session=session, journal=journal, engine=engine) as bot:
                await bot.start(settings.discord_token)
    finally:
        await engine.close()
    return 0


def main() -> int:
    try:
        settings = BotSettings.from_env(environment(os.environ))
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"bot: {problem}", file=sys.stderr)
        return 2
    setup_logging(settings)
    try:
        return asyncio.run(run(settings))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
