"""Settings from the environment and `.env`; the embedded engine process (EngineClient: test_engine_http.py)."""
from __future__ import annotations

import asyncio
import logging
import sys

import pytest

import devtools.discord_double  # noqa: F401  # isort: skip  (before discord: audioop warning)

import aiohttp  # isort: skip

from bot.engine.http import EngineClient  # isort: skip
from bot.settings import VARIABLES, BotSettings, SettingsError, environment, read_env_file  # isort: skip


def test_from_env_defaults_and_values():
    s = BotSettings.from_env({"DISCORD_TOKEN": "abc.def.ghi", "ENGINE_URLS": "http://a:1/",
                              "ALLOWED_CDN_HOSTS": "CDN.discordapp.com", "MAX_QUEUED_PER_USER": "4",
                              "USER_COOLDOWN_SECONDS": "2.5", "DEV_GUILD_ID": "123", "LOG_LEVEL": "debug"})
    assert s.engine_url == "http://a:1" and not s.embedded_engine
    assert s.allowed_cdn_hosts == ("cdn.discordapp.com",) and s.max_queued_per_user == 4
    assert s.user_cooldown_seconds == 2.5 and s.dev_guild_id == 123 and s.log_level == "DEBUG"
    assert s.command_prefix == "!" and BotSettings.from_env({"DISCORD_TOKEN": "x"}).embedded_engine
    assert "abc.def.ghi" not in repr(s)


def test_every_problem_is_one_clear_line():
    with pytest.raises(SettingsError) as err:
        BotSettings.from_env({"MAX_QUEUED_PER_USER": "many", "DEFAULT_SIZE": "2048", "MAX_SIZE": "1024",
                              "ENGINE_URLS": "ftp://x", "LOG_LEVEL": "LOUD"})
    problems = err.value.problems
    assert "MAX_QUEUED_PER_USER must be a whole number, got 'many'" in problems
    with pytest.raises(SettingsError) as err:
        BotSettings.from_env({"DEFAULT_SIZE": "2048", "MAX_SIZE": "1024", "ENGINE_URLS": "ftp://x",
                              "LOG_LEVEL": "LOUD"})
    problems = err.value.problems
    assert "DISCORD_TOKEN is not set" in problems
    assert any(p.startswith("DEFAULT_SIZE (2048) must not be larger") for p in problems)
    assert any("ENGINE_URLS" in p for p in problems) and any("LOG_LEVEL" in p for p in problems)


def test_env_file_is_read_and_the_environment_wins(tmp_path):
    env = tmp_path / ".env"
    env.write_text("# comment\nDISCORD_TOKEN='from-file'\nexport COMMAND_PREFIX=? # trailing\n\nBROKEN LINE\n")
    assert read_env_file(env) == {"DISCORD_TOKEN": "from-file", "COMMAND_PREFIX": "?"}
    merged = environment({"DISCORD_TOKEN": "from-env"}, env)
    assert merged == {"DISCORD_TOKEN": "from-env", "COMMAND_PREFIX": "?"}
    assert read_env_file(tmp_path / "missing") == {}


def test_every_variable_is_documented():
    from pathlib import Path

    doc = Path(__file__).parents[3] / "docs" / "bot.md"
    text = doc.read_text()
    for name in VARIABLES:
        assert f"`{name}`" in text, name


def test_main_prints_one_line_per_problem(monkeypatch, capsys, tmp_path):
    from bot import __main__ as main_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert main_module.main() == 2
    assert "bot: DISCORD_TOKEN is not set" in capsys.readouterr().err


def test_the_token_is_redacted_from_logs(caplog):
    from bot.__main__ import _RedactToken

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "oops %s", ("Bot sekrit.token.value",), None)
    assert _RedactToken("sekrit.token.value").filter(record)
    assert record.getMessage() == "oops Bot [redacted]"


# --- the embedded engine -----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_embedded_engine_starts_on_loopback_with_a_token_and_stops(tmp_path):
    from bot.engine.process import EmbeddedEngine

    env = {"PATH": "/usr/bin:/bin", "ENGINE_DEVICE": "cpu", "ENGINE_PRESETS_DIR": str(tmp_path / "presets"),
           "ENGINE_LOG_LEVEL": "WARNING", "ENGINE_WARM_UP": "false", "PYTHONPATH": str(sys.path[0])}
    engine = EmbeddedEngine(environ=env, start_timeout=120)
    async with aiohttp.ClientSession() as session:
        try:
            await asyncio.wait_for(engine.start(session), 150)
            assert engine.url.startswith("http://127.0.0.1:") and len(engine.token) >= 32
            async with session.get(f"{engine.url}/v1/queue") as resp:
                assert resp.status == 401  # a token is required
            client = EngineClient(session, engine.url, engine.token)
            assert "mosaic" in await client.presets()
        finally:
            await engine.stop()
    assert not engine.running


def test_broker_settings():
    base = {"DISCORD_TOKEN": "x"}
    s = BotSettings.from_env({**base, "ENGINE_BROKER_URL": "nats://127.0.0.1:4222"})
    assert s.engine_broker_url == "nats://127.0.0.1:4222" and not s.embedded_engine  # loopback: no token needed
    s = BotSettings.from_env({**base, "ENGINE_BROKER_URL": "tls://nats.example:4222", "ENGINE_BROKER_TOKEN": "t0k3n",
                              "ENGINE_BROKER_TLS_CA": "/ca.pem"})
    assert s.engine_broker_token == "t0k3n" and "t0k3n" not in repr(s)
    for env, expected in (
        ({"ENGINE_BROKER_URL": "nats://10.0.0.5:4222"}, "ENGINE_BROKER_TOKEN (or ENGINE_BROKER_USER and _PASSWORD)"),
        ({"ENGINE_BROKER_URL": "http://10.0.0.5:4222"}, "must look like nats://host:4222"),
        ({"ENGINE_BROKER_URL": "nats://u:p@127.0.0.1:4222"}, "must not hold credentials"),
        ({"ENGINE_BROKER_URL": "nats://127.0.0.1", "ENGINE_BROKER_USER": "bot"}, "go together"),
        ({"ENGINE_BROKER_URL": "nats://127.0.0.1", "ENGINE_URLS": "http://e:1"}, "not both"),
        ({"ENGINE_URLS": "http://a:1,http://b:2"}, "ENGINE_URLS takes one engine"),
    ):
        with pytest.raises(SettingsError) as err:
            BotSettings.from_env({**base, **env})
        assert any(expected in p for p in err.value.problems), err.value.problems
