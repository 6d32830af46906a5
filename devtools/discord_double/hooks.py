"""The ONE place that points discord.py at the double, and the list of every discord.py internal
the double relies on. Re-check this list when upgrading discord.py (the version is pinned in
pyproject.toml and checked below).

Patched (three class attributes, restored afterwards):

1. ``discord.http.Route.BASE`` = ``http://127.0.0.1:PORT/api/v10``.
   Every REST call (``HTTPClient.request``) and every interaction webhook call
   (``webhook.async_.AsyncWebhookAdapter.request``) builds its URL from it, when the ``Route``
   is created. ``discord.http._set_api_version`` would overwrite it; nothing calls that.
2. ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` = ``ws://127.0.0.1:PORT/gateway``.
   ``Client.connect`` does not call ``GET /gateway/bot``: it connects to this URL (and falls
   back to it after INVALID_SESSION). ``AutoShardedClient`` does call ``/gateway/bot``, which the
   double answers with the same URL. Resumes go to READY's ``resume_gateway_url``.
3. ``discord.asset.Asset.BASE`` = ``http://127.0.0.1:PORT`` (avatars and other CDN assets, so
   nothing ever reaches ``cdn.discordapp.com``). Attachments need no patch: their ``url`` comes
   from the payload and ``Attachment.read()`` fetches it as is (``HTTPClient.get_from_cdn``).

Behaviour of discord.py 2.7.1 the double is shaped around (not patched):

* ``http.json_or_text`` parses JSON only if ``Content-Type`` is exactly ``application/json``.
* ``HTTPClient.request``: a 429 is retried after the body's ``retry_after`` only if the
  response has a ``Via`` header (otherwise it assumes a Cloudflare ban and raises); 500, 502,
  504 and 524 are retried after ``1 + 2*try`` seconds, up to 5 tries, then
  ``DiscordServerError``; any other 5xx raises ``DiscordServerError`` at once.
  ``X-RateLimit-*`` headers drive its pre-emptive waits (``Ratelimit.update``).
* ``AsyncWebhookAdapter.request`` (interaction callbacks, followups) retries every 5xx.
* ``Client.login`` calls ``GET /users/@me`` then ``GET /oauth2/applications/@me``.
* ``DiscordWebSocket.from_client`` adds ``?v=10&encoding=json&compress=zlib-stream`` (or
  ``zstd-stream`` when ``utils._ActiveDecompressionContext`` finds ``zstandard``/``compression.zstd``).
* ``Client.before_identify_hook`` sleeps 5 s before every IDENTIFY except the first.
* ``ConnectionState._delay_ready`` waits ``guild_ready_timeout`` (2 s default) after the last
  GUILD_CREATE before ``on_ready``; pass ``guild_ready_timeout=0.1`` to test bots.
* The heartbeat runs in a thread (``KeepAliveHandler``) and beats once right after HELLO.
* ``Interaction`` reuses the HTTP session via ``state.http._HTTPClient__session``; callbacks add
  ``?with_response=1`` and expect an ``InteractionCallbackResponse`` body.
* ``Member`` requires ``flags`` and ``roles``; ``Interaction`` requires ``attachment_size_limit``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import discord
import discord.asset
import discord.gateway
import discord.http
import yarl

SUPPORTED_DISCORD_PY = "2.7.1"


def check_version() -> None:
    if discord.__version__ != SUPPORTED_DISCORD_PY:
        raise RuntimeError(
            f"devtools/discord_double was written against discord.py {SUPPORTED_DISCORD_PY}, found "
            f"{discord.__version__}: re-check the internals listed in devtools/discord_double/hooks.py, "
            "then update SUPPORTED_DISCORD_PY"
        )


@contextlib.contextmanager
def pointed_at(double_url: str) -> Iterator[None]:
    """Point discord.py at a double running at ``double_url`` (``http://127.0.0.1:PORT``)
    for the duration of the ``with`` block."""
    check_version()
    url = yarl.URL(double_url)
    if url.host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"refusing to point discord.py at a non-local host: {double_url}")
    saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.asset.Asset.BASE)
    discord.http.Route.BASE = f"{double_url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://{url.host}:{url.port}/gateway")
    discord.asset.Asset.BASE = double_url
    try:
        yield
    finally:
        (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.asset.Asset.BASE) = saved
