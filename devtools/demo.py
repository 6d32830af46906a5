"""`python -m devtools.demo`: the whole flow on one machine, with no Discord account.

Starts the Discord double (devtools/discord_double), the bot with its embedded engine process,
posts `!stylize` with a photo and a painting as a simulated user, follows the bot's status
message as it is edited, and saves the image the bot replies with.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools.discord_double import DiscordDouble, pointed_at, running  # before discord: see its __init__

import aiohttp  # noqa: E402

from bot.client import StyleBot  # noqa: E402
from bot.engine.http import EngineClient  # noqa: E402
from bot.engine.process import EmbeddedEngine  # noqa: E402
from bot.journal import Journal  # noqa: E402
from bot.settings import BotSettings  # noqa: E402

log = logging.getLogger("demo")

FINAL_MARKS = ("✅", "❌", "🚫")  # the bot's done / failed / cancelled status lines


def sample_images(folder: Path) -> tuple[Path, Path]:
    """The CLI's samples: a CC0 photo from scikit-image and a generated brush-stroke painting."""
    from nst_engine.cli import samples_main

    if samples_main([str(folder)]) != 0:
        raise SystemExit(1)
    return folder / "content.png", folder / "style.png"


async def _follow(double: DiscordDouble, status_id: int, timeout: float) -> dict[str, Any]:
    """Print each edit of the bot's status message until it is final; return the final message."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the bot did not finish within {timeout:.0f} s")
        action = await double.wait_for("message_edit", lambda a: a.message_id == status_id, timeout=left)
        first_line = (action.content or "").splitlines()[0] if action.content else ""
        print(f"  bot: {first_line}", flush=True)
        if any(mark in (action.content or "") for mark in FINAL_MARKS):
            assert action.message is not None
            return action.message


async def run_demo(content: Path, style: Path, out: Path, size: int, steps: int | None, timeout: float) -> int:
    with tempfile.TemporaryDirectory(prefix="nst-demo-") as tmp:
        async with DiscordDouble() as double, aiohttp.ClientSession() as session:
            settings = BotSettings.from_env({
                "DISCORD_TOKEN": double.token, "DEV_GUILD_ID": str(double.guild.id),
                "ALLOWED_CDN_HOSTS": "127.0.0.1", "BOT_DB_PATH": str(Path(tmp) / "bot.sqlite3"),
                "DEFAULT_SIZE": str(size), "MAX_SIZE": str(max(size, 64)), "LOG_LEVEL": "WARNING",
                "JOB_STEPS": str(steps or ""),
            })
            print("starting the engine (loading VGG19)...", flush=True)
            engine = EmbeddedEngine(environ={**os.environ, "ENGINE_LOG_LEVEL": "WARNING"}, start_timeout=timeout)
            await engine.start(session)
            try:
                journal = await Journal.open(settings.db_path)
                async with journal:
                    client = EngineClient(session, engine.url, engine.token)
                    bot = StyleBot(settings, session=session, journal=journal, engine=client)
                    with pointed_at(double.url):
                        async with running(bot, double, wait_ready=True, timeout=60):
                            print(f"{double.user.username} posts: !stylize  [{content.name}, {style.name}]", flush=True)
                            await double.post_message("!stylize", attachments=[
                                (content.name, content.read_bytes(), _mime(content)),
                                (style.name, style.read_bytes(), _mime(style)),
                            ])
                            status = await double.wait_for("message_create", timeout=30)
                            print(f"  bot: {(status.content or '').splitlines()[0]}", flush=True)
                            final = await _follow(double, int(status.message_id), timeout)
                            if not final.get("attachments"):
                                print(f"error: the bot answered without an image: {final.get('content')}",
                                      file=sys.stderr)
                                return 1
                            data = await double.download(final["attachments"][0])
            finally:
                await engine.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(f"saved the bot's reply image to {out.resolve()}")
    return 0


def _mime(path: Path) -> str:
    return {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(
        path.suffix.lower(), "application/octet-stream")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--content", type=Path, help="photo (default: a sample photo)")
    parser.add_argument("--style", type=Path, help="painting (default: a generated brush-stroke style)")
    parser.add_argument("-o", "--output", type=Path, default=Path("out/demo-reply.png"))
    parser.add_argument("--size", type=int, default=256, help="long side of the result in px")
    parser.add_argument("--steps", type=int, help="optimiser steps cap (default: the engine's)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the bot")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("discord").setLevel(logging.ERROR)  # e.g. "voice will NOT be supported": not used
    if args.content is None or args.style is None:
        content, style = sample_images(args.output.parent)
        args.content, args.style = args.content or content, args.style or style
    for path in (args.content, args.style):
        if not path.is_file():
            print(f"error: {path}: no such file", file=sys.stderr)
            return 1
    try:
        return asyncio.run(run_demo(args.content, args.style, args.output, args.size, args.steps, args.timeout))
    except (TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
