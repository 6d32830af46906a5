"""`python -m bot`: settings (environment, then `.env`), logging, then the bot until SIGTERM or Ctrl-C.

With no ENGINE_URLS the bot starts a local engine process first (embedded default), so this one command
runs everything on one machine. With ENGINE_BROKER_URL it publishes jobs to a NATS JetStream queue instead,
and GPU workers on any machine (`python -m nst_engine work`) pull them.

SIGTERM and SIGINT stop it the same way: unfinished jobs stay in the journal (the next start picks them up),
the Discord connection closes, the embedded engine stops. Start-up problems end in one sentence saying what
to fix: a mistake (a bad token, the Message Content intent off) exits with EXIT_MISTAKE, so a supervisor
that retries on failure gives up soon; an outage (Discord unreachable) is retried here with a backoff.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import aiohttp
import discord

from .backoff import Backoff
from .client import StyleBot
from .engine.base import Engine
from .engine.broker import BrokerAddress, BrokerEngine, BrokerRefused
from .engine.http import EngineClient
from .engine.process import EmbeddedEngine, EngineStartError, engine_installed
from .journal import Journal
from .runner import PREVIEW_SIDE
from .settings import BotSettings, SettingsError, environment

log = logging.getLogger("bot")

# Exit statuses: a setting or a Discord portal switch is wrong (starting again will not help); the embedded
# engine could not start (its own log lines say why).
EXIT_MISTAKE, EXIT_ENGINE = 2, 1
# Waits between tries to reach Discord at start: doubling from the first to the cap.
DISCORD_RETRY_FIRST_S, DISCORD_RETRY_MAX_S = 2.0, 60.0
# What "Discord cannot be reached" looks like at login (later, discord.py's own reconnect loop retries).
DISCORD_OUTAGES = (aiohttp.ClientError, OSError, TimeoutError, discord.DiscordServerError, discord.GatewayNotFound)
BAD_TOKEN = ("Discord refused DISCORD_TOKEN: copy the token again from the Developer Portal "
             "(your application, Bot, Reset Token) into DISCORD_TOKEN, the token alone without 'Bot '")
NO_INTENT = ("the Message Content intent is off: switch on Message Content Intent in the Developer Portal "
             "(your application, Bot, Privileged Gateway Intents), then start the bot again")
NO_ENGINE = ("ENGINE_URLS is empty, so the bot would start its own engine, but the engine (nst_engine, with "
             "PyTorch) is not installed here: set ENGINE_URLS to your engine's URL, or run the engine image")



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


def _not_about_voice(record: logging.LogRecord) -> bool:
    # discord.py warns at every start that voice libraries are missing; the bot has no voice features.
    return "voice will NOT be supported" not in record.getMessage()


def setup_logging(settings: BotSettings) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RedactToken(settings.discord_token, settings.engine_token, settings.engine_broker_token,
                                   settings.engine_broker_password))
    handler.addFilter(_not_about_voice)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.getLogger("discord").setLevel(max(logging.INFO, root.level))


class StartupError(Exception):
    """A start-up problem the admin must fix: one sentence, no traceback."""

    def __init__(self, sentence: str, status: int = EXIT_MISTAKE) -> None:
        super().__init__(sentence)
        self.status = status


async def run(settings: BotSettings) -> int:
    """Run until a signal (0) or a start-up problem (its status); SIGTERM and SIGINT are handled alike."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    stopping: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if stopping:
            log.info("received %s; already shutting down", sig.name)
            return
        stopping.append(sig)
        log.info("received %s; shutting down", sig.name)
        main_task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await serve(settings)
    except asyncio.CancelledError:
        if not stopping:
            raise
        main_task.uncancel()
    except StartupError as exc:
        log.error("%s", exc)
        return exc.status
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")
    return 0


async def serve(settings: BotSettings) -> None:
    async with aiohttp.ClientSession() as session:
        if settings.engine_broker_url is not None:
            await serve_with_broker(settings, session)
            return
        embedded = None
        url, token = settings.engine_url, settings.engine_token
        if settings.embedded_engine:
            if not engine_installed():
                raise StartupError(NO_ENGINE)
            embedded = EmbeddedEngine(start_timeout=settings.engine_start_timeout)
            url, token = embedded.url, embedded.token
        assert url is not None
        try:
            if embedded is not None:
                try:
                    await embedded.start(session)
                except EngineStartError as exc:
                    raise StartupError(str(exc), EXIT_ENGINE) from None
            journal = await Journal.open(settings.db_path)
            async with journal:
                await run_bot(settings, session, journal, EngineClient(session, url, token))
        finally:
            if embedded is not None:
                await embedded.stop()


async def serve_with_broker(settings: BotSettings, session: aiohttp.ClientSession) -> None:
    """GPU workers pull the jobs from a NATS JetStream queue. Refused credentials or a broker without JetStream
    are mistakes; an unreachable broker is an outage: the bot runs, and jobs wait ("the style engine is offline")."""
    assert settings.engine_broker_url is not None
    address = BrokerAddress(settings.engine_broker_url, settings.engine_broker_token, settings.engine_broker_user,
                            settings.engine_broker_password, settings.engine_broker_tls_ca)
    engine = BrokerEngine(address, preview_side=PREVIEW_SIDE if settings.preview_interval > 0 else 0)
    try:
        await engine.start()
    except BrokerRefused as exc:
        raise StartupError(str(exc)) from None
    try:
        journal = await Journal.open(settings.db_path)
        async with journal:
            await run_bot(settings, session, journal, engine)
    finally:
        await engine.close()


async def run_bot(settings: BotSettings, session: aiohttp.ClientSession, journal: Journal, engine: Engine) -> None:
    """Log in (retrying while Discord is unreachable), then stay connected until the bot is closed."""
    backoff = Backoff(DISCORD_RETRY_FIRST_S, DISCORD_RETRY_MAX_S)
    while True:
        delay = backoff.next()
        try:
            async with StyleBot(settings, session=session, journal=journal, engine=engine) as bot:
                try:
                    await bot.login(settings.discord_token)
                except DISCORD_OUTAGES as exc:
                    log.warning("cannot reach Discord (%s); trying again in %.0f s", _reason(exc), delay)
                else:
                    await bot.connect(reconnect=True)
                    return
        except discord.LoginFailure:
            raise StartupError(BAD_TOKEN) from None
        except discord.PrivilegedIntentsRequired:
            raise StartupError(NO_INTENT) from None
        await asyncio.sleep(delay)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def main() -> int:
    try:
        settings = BotSettings.from_env(environment(os.environ))
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"bot: {problem}", file=sys.stderr)
        return EXIT_MISTAKE
    setup_logging(settings)
    try:
        return asyncio.run(run(settings))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 0


if __name__ == "__main__":
    sys.exit(main())
