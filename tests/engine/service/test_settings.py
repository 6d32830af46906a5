"""Engine settings from the environment, and `serve.main`'s refusals (no server is started here)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nst_engine.service import serve
from nst_engine.service.settings import EngineSettings, SettingsError, is_loopback, parse_bool

TOKEN = "s3cret-token-0123456789"


def test_defaults():
    s = EngineSettings.from_env({})
    assert (s.host, s.port, s.token, s.device) == ("127.0.0.1", 8765, None, "auto")
    assert s.presets_dir == Path("presets") and not s.auth_required


def test_every_variable_is_read():
    env = {
        "ENGINE_HOST": "0.0.0.0", "ENGINE_PORT": "9000", "ENGINE_TOKEN": TOKEN, "ENGINE_DEVICE": "cuda:1",
        "ENGINE_PRESETS_DIR": "/data/presets", "ENGINE_MAX_UPLOAD_BYTES": "1000", "ENGINE_MAX_PIXELS": "2000",
        "ENGINE_MAX_SIZE": "2048", "ENGINE_DEFAULT_SIZE": "768", "ENGINE_MAX_STEPS": "1000",
        "ENGINE_DEFAULT_STEPS": "200", "ENGINE_MAX_STYLES": "3", "ENGINE_QUEUE_SIZE": "7",
        "ENGINE_MAX_QUEUED_PER_REQUESTER": "2", "ENGINE_JOB_TIMEOUT": "90.5", "ENGINE_RESULT_TTL": "120",
        "ENGINE_SHUTDOWN_GRACE": "0", "ENGINE_LOG_LEVEL": "debug", "ENGINE_PROGRESS_INTERVAL": "0.5",
        "ENGINE_PREVIEW_INTERVAL": "3", "ENGINE_WARM_UP": "no", "ENGINE_CHANNELS_LAST": "false",
        "ENGINE_BF16": "1", "ENGINE_COMPILE": "yes", "ENGINE_TF32": "off",
    }
    s = EngineSettings.from_env(env)
    assert s == EngineSettings(
        host="0.0.0.0", port=9000, token=TOKEN, device="cuda:1", presets_dir=Path("/data/presets"),
        max_upload_bytes=1000, max_pixels=2000, max_size=2048, default_size=768, max_steps=1000,
        default_steps=200, max_styles=3, queue_size=7, max_queued_per_requester=2, job_timeout=90.5,
        result_ttl=120.0, shutdown_grace=0.0, log_level="DEBUG", progress_interval=0.5, preview_interval=3.0,
        warm_up=False, channels_last=False, bf16=True, compile=True, tf32=False,
    )
    assert TOKEN not in repr(s)


def test_invalid_values_each_get_a_line():
    env = {"ENGINE_PORT": "http", "ENGINE_QUEUE_SIZE": "-1", "ENGINE_JOB_TIMEOUT": "inf", "ENGINE_BF16": "maybe"}
    with pytest.raises(SettingsError) as err:
        EngineSettings.from_env(env)
    problems = err.value.problems
    assert len(problems) == 3  # parse errors first; the queue size is checked once they are fixed
    assert any("ENGINE_PORT" in p for p in problems) and any("ENGINE_BF16" in p for p in problems)
    with pytest.raises(SettingsError) as err:
        EngineSettings.from_env({"ENGINE_QUEUE_SIZE": "0", "ENGINE_MAX_SIZE": "99999", "ENGINE_LOG_LEVEL": "loud"})
    assert len(err.value.problems) == 3


def test_token_required_off_loopback():
    with pytest.raises(SettingsError) as err:
        EngineSettings(host="0.0.0.0")
    assert "ENGINE_TOKEN is required" in err.value.problems[0]
    with pytest.raises(SettingsError):
        EngineSettings(host="192.168.1.5")
    with pytest.raises(SettingsError):
        EngineSettings(host="0.0.0.0", token="short")
    assert EngineSettings(host="0.0.0.0", token=TOKEN).auth_required
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2", "[::1]"):
        assert is_loopback(host)
        EngineSettings(host=host)
    for host in ("0.0.0.0", "::", "", "example.com", "10.0.0.1"):
        assert not is_loopback(host)


def test_replace_revalidates():
    s = EngineSettings()
    with pytest.raises(SettingsError):
        dataclasses.replace(s, host="0.0.0.0")


def test_parse_bool():
    assert parse_bool(" Yes ") is True and parse_bool("OFF") is False
    with pytest.raises(ValueError):
        parse_bool("2")


def _clear_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("ENGINE_"):
            monkeypatch.delenv(key)


def test_serve_refuses_public_host_without_token(monkeypatch, capsys):
    _clear_env(monkeypatch)
    assert serve.main(["--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ENGINE_TOKEN is required" in err and "Traceback" not in err


def test_serve_reports_bad_settings(monkeypatch, capsys):
    _clear_env(monkeypatch)
    monkeypatch.setenv("ENGINE_PORT", "eighty")
    monkeypatch.setenv("ENGINE_MAX_STEPS", "lots")
    assert serve.main([]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("nst_engine serve: ENGINE_") for line in lines)


def test_serve_reports_missing_device(monkeypatch, capsys):
    _clear_env(monkeypatch)
    monkeypatch.setenv("ENGINE_DEVICE", "cuda:7")
    assert serve.main([]) == 2
    assert "ENGINE_DEVICE" in capsys.readouterr().err


def test_worker_devices():
    from nst_engine.core.devices import DeviceUnavailable
    from nst_engine.service.worker import worker_devices

    assert worker_devices("cpu") == ["cpu"]
    assert len(worker_devices("auto")) >= 1
    with pytest.raises(DeviceUnavailable):
        worker_devices("cpu,cpu")
    with pytest.raises(DeviceUnavailable):
        worker_devices("tpu")


def test_broker_settings_for_the_worker():
    s = EngineSettings.from_env({"ENGINE_BROKER_URL": "nats://gpu-hub:4222", "ENGINE_BROKER_TOKEN": TOKEN,
                                 "ENGINE_BROKER_ACK_WAIT": "12", "ENGINE_BROKER_MAX_DELIVER": "5"})
    assert (s.broker_url, s.broker_ack_wait, s.broker_max_deliver) == ("nats://gpu-hub:4222", 12.0, 5)
    assert TOKEN not in repr(s)
    with pytest.raises(SettingsError) as err:
        EngineSettings.from_env({"ENGINE_BROKER_URL": "nats://gpu-hub:4222", "ENGINE_BROKER_ACK_WAIT": "1",
                                 "ENGINE_BROKER_MAX_DELIVER": "1"})
    problems = " | ".join(err.value.problems)
    assert "ENGINE_BROKER_TOKEN (or ENGINE_BROKER_USER and _PASSWORD) is required" in problems
    assert "ENGINE_BROKER_ACK_WAIT must be at least 3" in problems and "ENGINE_BROKER_MAX_DELIVER" in problems
