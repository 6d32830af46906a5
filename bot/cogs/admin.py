"""The Admin cog: per-guild limits (Manage Server), the owner's tree sync and queue status.

`config show`, `config set KEY VALUE`, `config allow #channel`, `config disallow #channel`, `config reset`.
Settings are stored in SQLite and override the bot's defaults (environment) for that guild.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, Optional

import discord
from discord import app_commands
from discord.ext import commands

from ..engine.broker import BrokerEngine
from ..errors import EngineError, UsageError
from ..jobs import GuildConfig
from ..settings import MAX_SIZE_LIMIT, MIN_SIZE

if TYPE_CHECKING:
    from ..client import StyleBot

log = logging.getLogger(__name__)

# KEY -> (GuildConfig field, parser, lowest, highest, description)
KEYS: dict[str, tuple[str, type, float, float, str]] = {
    "queued_per_user": ("max_queued_per_user", int, 0, 20, "jobs a user may have waiting besides the running one"),
    "cooldown": ("user_cooldown_seconds", float, 0, 3600, "seconds between two jobs of one user"),
    "queue_cap": ("guild_queue_cap", int, 1, 500, "unfinished jobs on this server"),
    "max_size": ("max_size", int, MIN_SIZE, MAX_SIZE_LIMIT, "largest output size in px (never above the bot's own maximum)"),
}
Key = Literal["queued_per_user", "cooldown", "queue_cap", "max_size"]


class Admin(commands.Cog):
    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot

    async def cog_command_error(self, ctx: commands.Context[Any], error: commands.CommandError) -> None:
        if isinstance(error, commands.UserInputError):
            p = self.bot.settings.command_prefix
            keys = ", ".join(f"`{k}`" for k in KEYS)
            await ctx.send(f"Usage: `{p}config show`, `{p}config set KEY VALUE` (keys: {keys}), "
                           f"`{p}config allow #channel`, `{p}config disallow #channel`, `{p}config reset`.",
                           ephemeral=True)
            return
        await self.bot.answer_error(ctx, error)

    # -- per-guild configuration ---------------------------------------------------------------------------

    @commands.hybrid_group(name="config", description="This server's limits for stylize (Manage Server).",
                           invoke_without_command=True)
    @commands.guild_only()
    @commands.has_guild_permissions(manage_guild=True)
    @app_commands.default_permissions(manage_guild=True)
    async def config(self, ctx: commands.Context[StyleBot]) -> None:
        """Show or change this server's limits for stylize (Manage Server)."""
        await self._show(ctx)

    @config.command(name="show", description="Show this server's limits for stylize.")
    @commands.guild_only()
    @commands.has_guild_permissions(manage_guild=True)
    async def config_show(self, ctx: commands.Context[StyleBot]) -> None:
        """Show this server's limits."""
        await self._show(ctx)

    async def _show(self, ctx: commands.Context[StyleBot]) -> None:
        assert ctx.guild is not None
        config, limits, max_size = await self.bot.guild_config(ctx.guild.id)
        channels = ", ".join(f"<#{c}>" for c in config.allowed_channels) or "every channel"
        await ctx.send(
            "**Stylize limits on this server**\n"
            f"• `queued_per_user`: {limits.max_queued_per_user} waiting jobs per user (plus one running)\n"
            f"• `cooldown`: {limits.user_cooldown_seconds:g} s between two jobs of one user\n"
            f"• `queue_cap`: {limits.guild_queue_cap} unfinished jobs on this server\n"
            f"• `max_size`: {max_size} px\n"
            f"• channels: {channels}",
            allowed_mentions=discord.AllowedMentions.none())

    @config.command(name="set", description="Change one of this server's limits.")
    @commands.guild_only()
    @commands.has_guild_permissions(manage_guild=True)
    @app_commands.describe(key="Which limit", value="The new value")
    async def config_set(self, ctx: commands.Context[StyleBot], key: Key, value: str) -> None:
        """Change a limit: `config set KEY VALUE` (queued_per_user, cooldown, queue_cap, max_size)."""
        assert ctx.guild is not None
        attr, parse, low, high, what = KEYS[key]
        try:
            number = parse(value)
        except ValueError:
            raise UsageError(f"`{key}` must be a number ({what}).") from None
        if not low <= number <= high:
            raise UsageError(f"`{key}` must be between {low:g} and {high:g} ({what}).")
        config = await self.bot.journal.guild_config(ctx.guild.id)
        await self.bot.journal.set_guild_config(ctx.guild.id, replace(config, **{attr: number}))
        await ctx.send(f"`{key}` is now {number:g} on this server.")

    @config.command(name="allow", description="Let stylize run in this channel (once one is allowed, only those).")
    @commands.guild_only()
    @commands.has_guild_permissions(manage_guild=True)
    async def config_allow(self, ctx: commands.Context[StyleBot],
                           channel: Optional[discord.TextChannel] = None) -> None:
        """Allow stylize in a channel; once any channel is allowed, only allowed channels work."""
        assert ctx.guild is not None
        target = channel.id if channel else ctx.channel.id
        config = await self.bot.journal.guild_config(ctx.guild.id)
        allowed = tuple(dict.fromkeys((*config.allowed_channels, target)))
        await self.bot.journal.set_guild_config(ctx.guild.id, replace(config, allowed_channels=allowed))
        await ctx.send(f"Stylize now runs in: {', '.join(f'<#{c}>' for c in allowed)}.")

    @config.command(name="disallow", description="Remove a channel from the allowed channels.")
    @commands.guild_only()
    @commands.has_guild_permissions(manage_guild=True)
    async def config_disallow(self, ctx: commands.Context[StyleBot],
                              channel: Optional[discord.TextChannel] = None) -> None:
        """Remove a channel from the allow-list (an empty list means every channel)."""
        assert ctx.guild is not None
        target = channel.id if channel else ctx.channel.id
        config = await self.bot.journal.guild_config(ctx.guild.id)
        allowed = tuple(c for c in config.allowed_channels if c != target)
        await self.bot.journal.set_guild_config(ctx.guild.id, replace(config, allowed_channels=allowed))
        where = ", ".join(f"<#{c}>" for c in allowed) or "every channel"
        await ctx.send(f"Stylize now runs in: {where}.")

    @config.command(name="reset", description="Back to the bot's default limits, in every channel.")
    @commands.guild_only()
    @commands.has_guild_permissions(manage_guild=True)
    async def config_reset(self, ctx: commands.Context[StyleBot]) -> None:
        """Forget this server's limits and channel list."""
        assert ctx.guild is not None
        await self.bot.journal.set_guild_config(ctx.guild.id, GuildConfig())
        await ctx.send("This server uses the bot's default limits again, in every channel.")

    # -- owner -----------------------------------------------------------------------------------------------

    @commands.command(name="sync", hidden=True)
    @commands.is_owner()
    async def sync(self, ctx: commands.Context[StyleBot], scope: Literal["global", "guild"] = "global") -> None:
        """Sync the slash commands: `sync` (everywhere, takes up to an hour) or `sync guild` (this server, now)."""
        if scope == "guild":
            if ctx.guild is None:
                raise UsageError("`sync guild` only works in a server.")
            self.bot.tree.copy_global_to(guild=ctx.guild)
            synced = await self.bot.tree.sync(guild=ctx.guild)
        else:
            synced = await self.bot.tree.sync()
        await ctx.send(f"Synced {len(synced)} commands ({scope}).")

    @commands.command(name="queue", hidden=True)
    @commands.is_owner()
    async def queue(self, ctx: commands.Context[StyleBot]) -> None:
        """How many jobs the bot is following, and whether the engines are ready."""
        engine = self.bot.engine
        if isinstance(engine, BrokerEngine):
            await ctx.send(await broker_overview(len(self.bot.scheduler), engine))
            return
        ready = await self.bot.engine.ready()
        await ctx.send(f"{len(self.bot.scheduler)} unfinished job(s); engine {'ready' if ready else 'not ready'}.")


async def broker_overview(unfinished: int, engine: BrokerEngine) -> str:
    """!queue in broker mode: the depth of the shared queue and each live worker with its device."""
    try:
        queue = await engine.queue()
    except EngineError:
        return f"{unfinished} unfinished job(s); the broker is unreachable, so the style engine is offline."
    lines = [f"{unfinished} unfinished job(s) here; {queue['queued']} waiting in the shared queue; "
             f"{len(queue['workers'])} worker(s):"]
    for w in queue["workers"]:
        doing = f"running `{w['job_id']}`" if w.get("job_id") else "idle"
        lines.append(f"- `{w.get('host')}` {w.get('device')}: {doing}, {w.get('jobs_done', 0)} done")
    if not queue["workers"]:
        lines.append("- none: jobs wait until a GPU worker starts (`python -m nst_engine work`).")
    return "\n".join(lines)


async def setup(bot: StyleBot) -> None:
    await bot.add_cog(Admin(bot))
