"""`StyleBot`: the discord.py Bot subclass that owns the shared resources (HTTP session, journal, engine
client, scheduler, job runner). Cogs reach them as typed attributes of the bot, never as globals.

Every way to start a job goes through `gate` (bot/gate.py): the channel, the limits and the images are
checked there, where jobs are created. `setup_hook` is the one startup place: extensions, dynamic buttons,
the dev-guild command sync, and the recovery of the journal's unfinished jobs. Errors: expected ones
(`UserFacingError`, bad arguments) are answered with their sentence; anything else is logged once here and
the user gets one generic sentence.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from .catalog import PresetCatalog
from .engine.base import Engine
from .errors import UserFacingError
from .gate import Gate
from .jobs import GuildConfig
from .journal import Journal
from .options import usage
from .runner import JobRunner
from .scheduler import Limits, Scheduler
from .settings import BotSettings
from .views import JobButton

log = logging.getLogger(__name__)

EXTENSIONS = ("bot.cogs.stylize", "bot.cogs.presets", "bot.cogs.admin")
GENERIC_ERROR = "Sorry, something went wrong on my side. It has been logged; please try again."
# BOT_HEALTH_FILE is touched this often while the gateway is connected (the container check allows 90 s).
HEALTH_INTERVAL_S = 30.0


def intents() -> discord.Intents:
    """Default intents plus Message Content (privileged: switch it on in the developer portal), which
    prefix commands need to read `!stylize ...` and its attachments."""
    value = discord.Intents.default()
    value.message_content = True
    return value


def original_error(error: BaseException) -> BaseException:
    """The exception a command raised, unwrapped from discord.py's Command/HybridCommand/AppCommand wrappers."""
    while isinstance(error, commands.HybridCommandError | commands.CommandInvokeError
                     | app_commands.CommandInvokeError) and error.original is not None:
        error = error.original
    return error


def user_message(error: BaseException, prefix: str) -> str | None:
    """The sentence for an expected error, or None for a bug."""
    error = original_error(error)
    if isinstance(error, UserFacingError):
        return error.message
    if isinstance(error, commands.MissingPermissions | app_commands.MissingPermissions):
        return "You need the **Manage Server** permission for that."
    if isinstance(error, commands.NotOwner):
        return "Only the bot's owner can do that."
    if isinstance(error, commands.NoPrivateMessage | app_commands.NoPrivateMessage):
        return "That only works in a server."
    if isinstance(error, commands.CheckFailure | app_commands.CheckFailure):
        return "You cannot use that command here."
    if isinstance(error, commands.UserInputError | app_commands.TransformerError):
        return f"{error}\n{usage(prefix)}" if str(error) else usage(prefix)
    return None


class StyleTree(app_commands.CommandTree["StyleBot"]):
    async def on_error(self, interaction: discord.Interaction[StyleBot], error: app_commands.AppCommandError) -> None:
        text = user_message(error, interaction.client.settings.command_prefix)
        if text is None:
            log.error("unexpected error in %s", interaction.command and interaction.command.qualified_name,
                      exc_info=original_error(error))
            text = GENERIC_ERROR
        await reply_to_interaction(interaction, text)


async def reply_to_interaction(interaction: discord.Interaction[Any], text: str) -> None:
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.info("could not answer an interaction: %s", exc)


class StyleBot(commands.Bot):
    def __init__(self, settings: BotSettings, *, session: aiohttp.ClientSession, journal: Journal,
                 engine: Engine, **options: Any) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned_or(settings.command_prefix),
            intents=options.pop("intents", intents()),
            owner_ids=set(settings.owner_ids),
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False),
            tree_cls=StyleTree,
            **options,
        )
        self.settings = settings
        self.session = session
        self.journal = journal
        self.engine = engine
        self.scheduler = Scheduler()
        self.presets = PresetCatalog(journal, engine)
        self.runner = JobRunner(self)
        self.gate = Gate(self)
        """Every job starts here: `gate.admit`, then `gate.create_job` (bot/gate.py)."""
        self._recovery: asyncio.Task[int] | None = None
        self._health: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        self.add_dynamic_items(JobButton)
        if self.settings.dev_guild_id is not None:
            await self.sync_dev_guild(self.settings.dev_guild_id)
        # HTTP-only work (message edits, engine calls): it needs no gateway, so it may start right away.
        self._recovery = asyncio.create_task(self.runner.recover(), name="nst-recovery")
        if self.settings.health_file is not None:
            self._health = asyncio.create_task(self._touch_health_file(self.settings.health_file), name="nst-health")

    async def _touch_health_file(self, path: Path) -> None:
        """Touch `path` every HEALTH_INTERVAL_S while connected to Discord (a container health check reads it)."""
        await self.wait_until_ready()
        while not self.is_closed():
            if self.ws is not None and self.ws.open:
                await asyncio.to_thread(path.touch)
            await asyncio.sleep(HEALTH_INTERVAL_S)

    async def sync_dev_guild(self, guild_id: int) -> None:
        """Slash commands show up at once in the dev guild (global syncs are the owner's `sync` command)."""
        guild = discord.Object(id=guild_id)
        self.tree.copy_global_to(guild=guild)
        synced = await self.tree.sync(guild=guild)
        log.info("synced %d commands to the dev guild %d", len(synced), guild_id)

    async def close(self) -> None:
        for task in (self._recovery, self._health):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.runner.close()
        await super().close()

    # -- per-guild settings ---------------------------------------------------------------------------------

    async def guild_config(self, guild_id: int | None) -> tuple[GuildConfig, Limits, int]:
        """(the guild's overrides, the limits in force, the largest size allowed)."""
        config = await self.journal.guild_config(guild_id)
        s = self.settings
        limits = Limits(
            max_queued_per_user=_pick(config.max_queued_per_user, s.max_queued_per_user),
            user_cooldown_seconds=_pick(config.user_cooldown_seconds, s.user_cooldown_seconds),
            guild_queue_cap=_pick(config.guild_queue_cap, s.guild_queue_cap),
        )
        max_size = min(s.max_size, config.max_size) if config.max_size else s.max_size
        return config, limits, max_size

    def dispatch(self, event_name: str, /, *args: Any, **kwargs: Any) -> None:
        # After close() discord.py has no loop to run handlers on: an event still in flight (e.g. the
        # command_error of a command that answered just before) would leave a never-awaited coroutine.
        if self.is_closed():
            return
        super().dispatch(event_name, *args, **kwargs)

    async def on_ready(self) -> None:
        log.info("connected as %s (%s) to %d guild(s)", self.user, getattr(self.user, "id", "?"), len(self.guilds))

    async def on_command_error(self, ctx: commands.Context[Any], error: commands.CommandError) -> None:
        if isinstance(error, commands.CommandNotFound):
            return
        if ctx.command is not None and ctx.command.has_error_handler() or (
                ctx.cog is not None and ctx.cog.has_error_handler()):
            return
        await self.answer_error(ctx, error)

    async def answer_error(self, ctx: commands.Context[Any], error: BaseException) -> None:
        text = user_message(error, self.settings.command_prefix)
        if text is None:
            if isinstance(original_error(error), discord.HTTPException):
                log.warning("Discord error in %s: %s", ctx.command, original_error(error))
            else:
                log.error("unexpected error in %s", ctx.command, exc_info=original_error(error))
            text = GENERIC_ERROR
        # A reply, so that in a busy channel the user sees the answer is theirs (slash commands: ephemeral).
        reference = ctx.message.to_reference(fail_if_not_exists=False) if ctx.interaction is None else None
        try:
            await ctx.send(text, ephemeral=True, reference=reference)
        except discord.HTTPException as exc:
            log.info("could not send an error message: %s", exc)


def _pick(override: Any, default: Any) -> Any:
    return default if override is None else override
