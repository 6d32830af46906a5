"""The Presets cog: `presets` (names and a contact sheet), and for admins `preset add NAME` / `preset remove NAME`.

Guild presets live in the bot's SQLite; global ones are the engines' (presets directory and builtins).
"""
from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands
from PIL import Image

from .. import attachments, render
from ..errors import UsageError, UserFacingError
from ..options import normalize_preset_name

if TYPE_CHECKING:
    from ..client import StyleBot

log = logging.getLogger(__name__)

# Thumbnails on one contact sheet (Discord shows one image per message best; more would be unreadable).
SHEET_MAX = 24
# Guild presets are stored re-encoded with at most this long side: style images are resized to the output
# anyway, and it keeps the database small.
STORED_MAX_SIDE = 1024
# Presets per guild: enough for a community's favourites, and a bound on the database.
MAX_GUILD_PRESETS = 50


def _shrink_png(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (STORED_MAX_SIDE, STORED_MAX_SIDE))
        rgb = im.convert("RGB")
    rgb.thumbnail((STORED_MAX_SIDE, STORED_MAX_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "PNG", optimize=True)
    return out.getvalue()


class Presets(commands.Cog):
    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot

    async def cog_command_error(self, ctx: commands.Context[Any], error: commands.CommandError) -> None:
        p = self.bot.settings.command_prefix
        if isinstance(error, commands.MissingRequiredAttachment | commands.MissingRequiredArgument):
            await ctx.send(f"Usage: `{p}preset add NAME` with the style image attached, "
                           f"or `{p}preset remove NAME`.", ephemeral=True)
            return
        await self.bot.answer_error(ctx, error)

    @commands.hybrid_command(name="presets", description="List the style presets, with a contact sheet.")
    async def presets(self, ctx: commands.Context[StyleBot]) -> None:
        """List the style presets you can use with stylize, with one picture of them all."""
        await ctx.defer()
        guild_id = ctx.guild.id if ctx.guild else None
        names = await self.bot.presets.names(guild_id)
        if not names:
            offline = await self.bot.presets.global_names() is None
            raise UserFacingError("The style engine is offline, so I cannot list its presets right now."
                                  if offline else "There are no presets yet.")
        shown = names[:SHEET_MAX]
        images = await asyncio.gather(*(self._image(guild_id, n, source) for n, source in shown))
        sheet = await asyncio.to_thread(render.contact_sheet, [(n, img) for (n, _), img in zip(shown, images)])
        guild_names = [f"`{n}`" for n, src in names if src == "guild"]
        global_names = [f"`{n}`" for n, src in names if src == "global"]
        lines = [f"**Presets** — use one with `{self.bot.settings.command_prefix}stylize NAME` or `/stylize`."]
        if guild_names:
            lines.append(f"This server: {', '.join(guild_names)}")
        if global_names:
            lines.append(f"Everywhere: {', '.join(global_names)}")
        if len(names) > SHEET_MAX:
            lines.append(f"-# The picture shows the first {SHEET_MAX}.")
        await ctx.send("\n".join(lines)[:2000], file=discord.File(io.BytesIO(sheet), filename="presets.png"))

    async def _image(self, guild_id: int | None, name: str, source: str) -> bytes | None:
        if source == "guild":
            return await self.bot.journal.preset_image(guild_id, name)
        return await self.bot.engine.preset_image(name)

    @commands.hybrid_group(name="preset", description="Add or remove this server's style presets.",
                           invoke_without_command=True)
    @commands.guild_only()
    async def preset(self, ctx: commands.Context[StyleBot]) -> None:
        """Manage this server's presets (Manage Server): `preset add NAME` with an image, `preset remove NAME`."""
        p = self.bot.settings.command_prefix
        await ctx.send(f"Usage: `{p}preset add NAME` with the style image attached, or `{p}preset remove NAME`. "
                       f"`{p}presets` lists them.")

    @preset.command(name="add", description="Add a preset to this server from an image (Manage Server).")
    @commands.guild_only()
    @commands.has_guild_permissions(manage_guild=True)
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(name="1-32 characters: a-z, 0-9, - and _", image="The style image (a painting)")
    async def preset_add(self, ctx: commands.Context[StyleBot], name: str, image: discord.Attachment) -> None:
        """Add (or replace) a preset of this server: `preset add NAME` with the style image attached."""
        await ctx.defer()
        assert ctx.guild is not None
        folded = normalize_preset_name(name)
        existing = await self.bot.journal.preset_names(ctx.guild.id)
        if folded not in existing and len(existing) >= MAX_GUILD_PRESETS:
            raise UsageError(f"This server already has {MAX_GUILD_PRESETS} presets; remove one first.")
        s = self.bot.settings
        fetched = await attachments.fetch(self.bot.session, attachments.ref_of(image),
                                          max_bytes=s.max_attachment_bytes, allowed_hosts=s.allowed_cdn_hosts)
        try:
            png = await asyncio.to_thread(_shrink_png, fetched.data)
        except (OSError, ValueError, Image.DecompressionBombError):
            raise UsageError(f"I could not read `{image.filename}` as an image.") from None
        await self.bot.journal.add_preset(ctx.guild.id, folded, png, ctx.author.id)
        verb = "Replaced" if folded in existing else "Added"
        await ctx.send(f"{verb} the preset `{folded}`. Try it: `{s.command_prefix}stylize {folded}`.")

    @preset.command(name="remove", description="Remove one of this server's presets (Manage Server).")
    @commands.guild_only()
    @commands.has_guild_permissions(manage_guild=True)
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(name="The preset to remove")
    async def preset_remove(self, ctx: commands.Context[StyleBot], name: str) -> None:
        """Remove a preset of this server."""
        assert ctx.guild is not None
        folded = normalize_preset_name(name)
        if not await self.bot.journal.remove_preset(ctx.guild.id, folded):
            global_names = await self.bot.presets.global_names() or []
            if folded in global_names:
                raise UsageError(f"`{folded}` is a global preset; only the engine's owner can remove it.")
            raise UsageError(f"This server has no preset called `{folded}`.")
        await ctx.send(f"Removed the preset `{folded}`.")


async def setup(bot: StyleBot) -> None:
    await bot.add_cog(Presets(bot))
