"""A local Discord server double: an unmodified discord.py client connects to it over real
sockets (gateway websocket, REST API v10, CDN) exactly as it connects to Discord.

See README.md in this folder for how to write an end-to-end bot test.
"""

import warnings

with warnings.catch_warnings():
    # discord.py 2.7.1 imports the stdlib ``audioop`` (for voice), deprecated since Python 3.11;
    # with pytest's ``filterwarnings = ["error"]`` that import would fail. Importing the double
    # first makes later ``import discord`` statements hit the module cache.
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    import discord  # noqa: F401

from .hooks import SUPPORTED_DISCORD_PY, pointed_at
from .ratelimits import Fault, RateLimitPolicy
from .runner import running
from .server import DiscordDouble, Upload
from .state import PERMISSIONS, Action, Channel, InteractionHandle, StoredFile, User

__all__ = [
    "PERMISSIONS",
    "SUPPORTED_DISCORD_PY",
    "Action",
    "Channel",
    "DiscordDouble",
    "Fault",
    "InteractionHandle",
    "RateLimitPolicy",
    "StoredFile",
    "Upload",
    "User",
    "pointed_at",
    "running",
]
