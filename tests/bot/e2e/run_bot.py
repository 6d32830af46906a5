"""`python tests/bot/e2e/run_bot.py http://127.0.0.1:PORT`: the bot's own `python -m bot` entry point, with
discord.py pointed at the Discord double at that address (the one thing a real start does differently)."""
import sys

from devtools.discord_double import pointed_at  # isort: skip  (before discord)

from bot.__main__ import main  # isort: skip

if __name__ == "__main__":
    with pointed_at(sys.argv[1]):
        sys.exit(main())
