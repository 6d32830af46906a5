"""``python -m devtools.discord_double``: run the double standalone (a dev tool) and print how to
point a bot at it. Stop with Ctrl-C.

Point a discord.py bot at it from Python with ``devtools.discord_double.pointed_at(URL)`` and start
the bot with the printed token. The test API (post_message, invoke_slash, ...) is only reachable
in-process; standalone, the double is a passive Discord that logs what the bot does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from .server import DiscordDouble


async def serve(port: int) -> None:
    double = DiscordDouble()
    await double.start(port)
    print(f"Discord double on {double.url}")
    print(f"  REST API: {double.api_base}")
    print(f"  gateway : {double.gateway_url}")
    print(f"  token   : {double.token}")
    print(f"  guild {double.guild.id} #general {double.channel.id}; user alice {double.user.id}")
    seen = 0
    try:
        while True:
            await asyncio.sleep(0.5)
            for action in double.actions[seen:]:
                print(action)
            seen = len(double.actions)
    finally:
        await double.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
