"""Real processes for the restart tests: the bot (`python -m bot`'s main, pointed at the Discord double) and
a standalone engine (`python -m nst_engine serve`), started, killed and started again on the same journal.

Output goes to one log file per start, so a test can wait for a line and check that no traceback was printed.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[3]
LAUNCHER = Path(__file__).with_name("run_bot.py")
# Real VGG19 on the CPU at 64 px: long enough that a kill lands while the job runs, short enough for a test.
JOB_STEPS = 8
ENGINE_LIMITS = {"ENGINE_DEVICE": "cpu", "ENGINE_MAX_SIZE": "64", "ENGINE_DEFAULT_SIZE": "64",
                 "ENGINE_MAX_STEPS": "200", "ENGINE_PROGRESS_INTERVAL": "0.2", "ENGINE_LOG_LEVEL": "INFO"}
READY_LINE = re.compile(r"the embedded engine is ready \(pid (\d+)\)")


def base_environ(**overrides: str) -> dict[str, str]:
    """This process's environment without any bot or engine settings of the developer's, plus `overrides`."""
    own = {k: v for k, v in os.environ.items()
           if not k.startswith(("ENGINE_", "DISCORD_", "BOT_")) and k not in ("LOG_LEVEL", "PYTHONPATH")}
    return {**own, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **overrides}


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as dead: it holds no memory and no port)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def until(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.1)


class Process:
    """One program, started (again) with `start()`, each start logging to its own file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], folder: Path) -> None:
        self.name, self.argv, self.env, self.folder = name, argv, env, folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.name}-{self.starts}.log"

    def start(self) -> Process:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is already running"
        self.close_log()
        self.starts += 1
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by close_log
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.folder, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def all_logs(self) -> str:
        return "".join((self.folder / f"{self.name}-{n}.log").read_text(errors="replace")
                       for n in range(1, self.starts + 1))

    async def wait_log(self, pattern: str | re.Pattern[str], timeout: float = 120.0, count: int = 1) -> re.Match[str]:
        """The `count`-th match of `pattern` in this start's log; fails early if the process exits."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            matches = list(regex.finditer(self.log()))
            if len(matches) >= count:
                return matches[count - 1]
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before {regex.pattern!r}:\n"
                                     f"{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {regex.pattern!r} in {self.name}'s log after {timeout:g} s:\n"
                                     f"{self.log()[-3000:]}")
            await asyncio.sleep(0.1)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def exited(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        proc = self.proc
        await until(lambda: proc.poll() is not None, timeout, f"{self.name} to exit")
        return proc.returncode

    def stop(self) -> None:
        """Cleanup: kill it if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.close_log()

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class BotProcess(Process):
    """`python -m bot` against the double; with no `engine_url` it starts its embedded engine."""

    def __init__(self, double_url: str, env: dict[str, str], folder: Path) -> None:
        super().__init__("bot", [sys.executable, str(LAUNCHER), double_url], env, folder)

    @property
    def engine_pid(self) -> int:
        """The pid of the embedded engine that got ready last in this start."""
        matches = READY_LINE.findall(self.log())
        assert matches, self.log()[-2000:]
        return int(matches[-1])


def bot_environ(double, folder: Path, **overrides: str) -> dict[str, str]:  # noqa: ANN001
    """The bot's settings for a test: the double, small jobs, quick retries; with no ENGINE_URLS in
    `overrides` the bot starts its embedded engine with the ENGINE_* limits here."""
    settings = {
        "DISCORD_TOKEN": double.token, "DEV_GUILD_ID": str(double.guild.id), "ALLOWED_CDN_HOSTS": "127.0.0.1",
        "BOT_DB_PATH": str(folder / "bot.sqlite3"), "PROGRESS_EDIT_INTERVAL": "0", "PREVIEW_INTERVAL": "0",
        "USER_COOLDOWN_SECONDS": "0", "DEFAULT_SIZE": "64", "MAX_SIZE": "64", "JOB_STEPS": str(JOB_STEPS),
        "ENGINE_RETRY_MAX_SECONDS": "1", "LOG_LEVEL": "INFO", "ENGINE_PRESETS_DIR": str(folder / "presets"),
        "ENGINE_SHUTDOWN_GRACE": "60", **ENGINE_LIMITS}
    return base_environ(**{**settings, **overrides})


class EngineProcess(Process):
    """`python -m nst_engine serve` on a fixed port (an ENGINE_URLS engine), restartable on the same port."""

    def __init__(self, port: int, token: str, folder: Path, **overrides: str) -> None:
        env = base_environ(ENGINE_TOKEN=token, ENGINE_PRESETS_DIR=str(folder / "presets"),
                           ENGINE_SHUTDOWN_GRACE="60", **ENGINE_LIMITS, **overrides)
        super().__init__("engine", [sys.executable, "-m", "nst_engine", "serve", "--host", "127.0.0.1",
                                    "--port", str(port)], env, folder)
        self.url = f"http://127.0.0.1:{port}"
        self.token = token
