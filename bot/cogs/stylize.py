"""The Stylize cog: hybrid `stylize` (`!stylize` and `/stylize`), preset autocomplete, the "Stylize with…" and
"Use as style" message context menus, and the job buttons' work (Again, Stronger, Weaker, Keep colours,
Cancel). The life of a job after it is accepted is `bot/runner.py`'s.
"""
from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, Optional

import discord
from discord import app_commands
from discord.ext import commands

from .. import attachments, render
from ..errors import BadAttachment, NotAllowed, UsageError, UserFacingError
from ..gate import Admission, Requester, SendStatus
from ..jobs import JobParams, JobRecord
from ..options import StyleOptions, parse_options, usage
from ..settings import MAX_SIZE_LIMIT, MIN_SIZE

if TYPE_CHECKING:
    from ..client import StyleBot

SEED_MAX = 2**31 - 1
HELP = """Turn a photo into a painting in the style of another image, or of a preset.

Three ways to give the images:
• attach two images: first the photo, then the style (a painting);
• attach one photo and name a preset: `{p}stylize mosaic` (see `{p}presets`);
• reply to a message that holds an image (or two) with `{p}stylize mosaic` (or just `{p}stylize` if
  that message holds both images).
With one image and no preset, the image you saved with the "Use as style" menu is the style.

Options, in any order after the preset name:
• strength: subtle, light, balanced (default), strong, bold, intense;
• size=768: the long side of the result in pixels (each server has a maximum);
• keep-colours: keep the photo's own colours;
• seed=42: the same seed and images give the same picture.

Example: `{p}stylize mosaic strong size=768 keep-colours`.
While it runs, the status message shows the queue position, then the progress and a preview. The result
has buttons: Again (new seed), Stronger, Weaker, Keep colours. Only you (or a server admin) can use them.
The slash command `/stylize` has the same options."""
Strength = Literal["subtle", "light", "balanced", "strong", "bold", "intense"]


class Stylize(commands.Cog):
    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot
        self.menus = [
            app_commands.ContextMenu(name="Stylize with…", callback=self.stylize_with_menu),
            app_commands.ContextMenu(name="Use as style", callback=self.use_as_style_menu),
        ]
        for menu in self.menus:
            bot.tree.add_command(menu)
        self.stylize.help = HELP.format(p=bot.settings.command_prefix)

    async def cog_unload(self) -> None:
        for menu in self.menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)

    async def cog_command_error(self, ctx: commands.Context[Any], error: commands.CommandError) -> None:
        await self.bot.answer_error(ctx, error)

    # -- the command ----------------------------------------------------------------------------------------

    @commands.hybrid_command(name="stylize", help=HELP.format(p="!"), brief="Stylize a photo",
                             usage="[preset] [strength] [size=N] [keep-colours] [seed=N]  (+ attach images)",
                             description="Turn a photo into a painting in the style of another image or a preset.")
    @app_commands.describe(
        content="The photo to stylize", style="A painting whose style to copy (or use a preset)",
        preset="A preset style, instead of a style image (and options: strong, size=768, keep-colours)",
        strength="How much of the style to use", size="Long side of the result in pixels",
        keep_colours="Keep the photo's own colours", seed="The same seed and images give the same picture",
    )
    async def stylize(self, ctx: commands.Context[StyleBot], content: Optional[discord.Attachment] = None,
                      style: Optional[discord.Attachment] = None, *, preset: Optional[str] = None,
                      strength: Optional[Strength] = None, size: Optional[app_commands.Range[int, MIN_SIZE, MAX_SIZE_LIMIT]] = None,
                      keep_colours: Optional[bool] = None,
                      seed: Optional[app_commands.Range[int, 0, SEED_MAX]] = None) -> None:
        # The gate first (one SQLite read, well within Discord's 3 s), so a slash refusal stays ephemeral;
        # the images are checked in start(), once they are gathered.
        admission = await self.bot.gate.admit(Requester.of_context(ctx))
        if ctx.interaction is not None:
            await ctx.defer()  # everything below may take longer than 3 s
        prefix = self.bot.settings.command_prefix
        opts = parse_options(preset, prefix).merged(strength=strength, size=size, keep_colours=keep_colours, seed=seed)
        refs = await self._referenced_images(ctx) + [attachments.ref_of(a) for a in (content, style) if a]
        if ctx.interaction is None:
            refs += [attachments.ref_of(a) for a in ctx.message.attachments[2:]]
        if not refs:
            raise UsageError(f"I need a photo to stylize.\n{usage(prefix)}")
        if len(refs) > 2:
            raise UsageError("That is more than two images: I need one photo and at most one style image.")

        async def send_status(text: str, view: discord.ui.View) -> discord.Message | None:
            if ctx.interaction is None:
                return await ctx.reply(text, view=view, mention_author=False)
            return await ctx.send(text, view=view)

        await self.start(admission, refs, opts, send_status,
                         reply_to=ctx.message.id if ctx.interaction is None else None)

    @stylize.autocomplete("preset")
    async def preset_autocomplete(self, interaction: discord.Interaction[StyleBot],
                                  current: str) -> list[app_commands.Choice[str]]:
        names = await self.bot.presets.names(interaction.guild_id)
        typed = current.strip().casefold()
        ranked = [n for n, _ in names if n.startswith(typed)] + [n for n, _ in names if typed in n
                                                                  and not n.startswith(typed)]
        return [app_commands.Choice(name=n, value=n) for n in ranked[:25]]

    async def _referenced_images(self, ctx: commands.Context[StyleBot]) -> list[attachments.ImageRef]:
        """Images of the message a prefix command replies to (they come first: the photo)."""
        ref = ctx.message.reference if ctx.interaction is None else None
        if ref is None or ref.message_id is None:
            return []
        message = ref.resolved if isinstance(ref.resolved, discord.Message) else None
        if message is None:
            try:
                message = await ctx.channel.fetch_message(ref.message_id)
            except discord.HTTPException:
                raise BadAttachment("I cannot see the message you replied to.") from None
        refs = attachments.image_refs(message)
        if not refs:
            raise UsageError("The message you replied to has no image. Reply to a message with a photo, "
                             "or attach one.")
        return refs

    # -- accepting a job ---------------------------------------------------------------------------------------

    async def start(self, admission: Admission, refs: list[attachments.ImageRef], opts: StyleOptions,
                    send_status: SendStatus, *, reply_to: int | None = None) -> JobRecord:
        """Download the images of an admitted request, pick its style, and create the job."""
        bot, s = self.bot, self.bot.settings
        bot.gate.check_images(refs)  # before downloading anything
        if len(refs) == 2 and opts.preset:
            raise UsageError("Give either a second image or a preset name as the style, not both.")
        guild_id = admission.requester.guild_id
        resolved = await bot.presets.resolve(guild_id, opts.preset) if opts.preset else None
        remembered = None
        if len(refs) == 1 and resolved is None:
            remembered = await bot.journal.user_style(admission.requester.user_id)
            if remembered is None:
                raise UsageError("I also need a style: attach a second image, or name a preset "
                                 f"(`{s.command_prefix}presets` lists them).\n{usage(s.command_prefix)}")
        fetched = [await attachments.fetch(bot.session, r, max_bytes=s.max_attachment_bytes,
                                           allowed_hosts=s.allowed_cdn_hosts) for r in refs]
        content = fetched[0]
        style_bytes, style_name, label, preset = None, None, "your image", None
        if len(fetched) == 2:
            style_bytes, style_name = fetched[1].data, fetched[1].filename
        elif remembered is not None:
            style_bytes, style_name, label = remembered[0], remembered[1], "your saved style"
        elif resolved is not None and resolved.image is not None:
            style_bytes, style_name, label = resolved.image, f"{resolved.name}.png", f"preset {resolved.name}"
        elif resolved is not None:
            preset, label = resolved.name, f"preset {resolved.name}"
        params = JobParams(
            size=min(opts.size or s.default_size, admission.max_size),
            strength=opts.strength or render.DEFAULT_STRENGTH, preserve_colors=bool(opts.keep_colours),
            seed=opts.seed if opts.seed is not None else _seed(), preset=preset, style_label=label, steps=s.job_steps)
        return await bot.gate.create_job(admission, content=content.data, content_name=content.filename,
                                         style=style_bytes, style_name=style_name, params=params,
                                         send_status=send_status, reply_to=reply_to)

    # -- buttons ----------------------------------------------------------------------------------------------

    async def on_job_button(self, interaction: discord.Interaction[StyleBot], action: str, job_id: str) -> None:
        try:
            await self._job_button(interaction, action, job_id)
        except UserFacingError as exc:
            await _tell(interaction, exc.message)

    async def _job_button(self, interaction: discord.Interaction[StyleBot], action: str, job_id: str) -> None:
        bot = self.bot
        job = await bot.journal.get_job(job_id)
        if job is None:
            raise UserFacingError("I no longer know that job.")
        # The new job belongs where the pressed one does; so does the gate's channel check.
        requester = Requester.of(interaction.user, job.guild_id, job.channel_id, interaction.permissions)
        if requester.user_id != job.user_id and not requester.admin:
            raise NotAllowed(f"Only <@{job.user_id}> (or a server admin) can use these buttons.")
        if action == "cancel":
            if await bot.runner.cancel(job, interaction.user.display_name):
                await interaction.response.defer()
            else:
                raise UserFacingError("That job has already finished.")
            return
        admission = await bot.gate.admit(requester)  # the inputs are the journal's: no image to check
        inputs = await bot.journal.inputs(job_id)
        if inputs is None:
            raise UserFacingError("The images of that job are no longer stored; please start a new one.")
        p = job.params
        if action == "again":
            params = replace(p, seed=_seed())
        elif action in ("stronger", "weaker"):
            level = render.stronger(p.strength) if action == "stronger" else render.weaker(p.strength)
            if level is None:
                raise UserFacingError(f"That is already the {action.removesuffix('er')}est strength.")
            params = replace(p, strength=level)
        else:
            params = replace(p, preserve_colors=not p.preserve_colors)
        await interaction.response.defer()
        channel = bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        source = interaction.message

        async def send_status(text: str, view: discord.ui.View) -> discord.Message | None:
            reference = source.to_reference(fail_if_not_exists=False) if source else None
            return await channel.send(text, view=view, reference=reference)

        await bot.gate.create_job(admission, content=inputs[0], content_name=job.content_name, style=inputs[1],
                                  style_name=job.style_name, params=params, send_status=send_status,
                                  parent_id=job.id)

    # -- context menus ----------------------------------------------------------------------------------------

    async def stylize_with_menu(self, interaction: discord.Interaction[StyleBot], message: discord.Message) -> None:
        refs = attachments.image_refs(message)[:1]
        # Refused at once rather than after a pick; the pick goes through the gate again (it creates the job).
        await self.bot.gate.admit(Requester.of_interaction(interaction, message.channel.id), refs)
        if not refs:
            raise UsageError("That message has no image to stylize.")
        names = [n for n, _ in await self.bot.presets.names(interaction.guild_id)][:25]
        if not names:
            raise UserFacingError("There are no presets yet (and the style engine may be offline).")
        view = PresetPicker(self, message, refs, names)
        await interaction.response.send_message("Pick a style for this image:", view=view, ephemeral=True)

    async def use_as_style_menu(self, interaction: discord.Interaction[StyleBot], message: discord.Message) -> None:
        refs = attachments.image_refs(message)[:1]
        # Not a job (no limits, no cooldown), but it downloads an image here: the channel rule holds.
        await self.bot.gate.admit(Requester.of_interaction(interaction, message.channel.id), refs, starts_job=False)
        if not refs:
            raise UsageError("That message has no image to use as a style.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        s = self.bot.settings
        image = await attachments.fetch(self.bot.session, refs[0], max_bytes=s.max_attachment_bytes,
                                        allowed_hosts=s.allowed_cdn_hosts)
        await self.bot.journal.set_user_style(interaction.user.id, image.data, image.filename)
        await interaction.followup.send(
            f"Saved `{image.filename}` as your style. Your next `/stylize` with just a photo (and no preset) "
            "will use it.", ephemeral=True)


class PresetPicker(discord.ui.View):
    """The ephemeral preset menu of "Stylize with…" (short-lived: it need not survive a restart)."""

    def __init__(self, cog: Stylize, message: discord.Message, refs: list[attachments.ImageRef],
                 names: list[str]) -> None:
        super().__init__(timeout=300)
        self.cog, self.message, self.refs = cog, message, refs
        self.pick.options = [discord.SelectOption(label=n, value=n) for n in names]

    @discord.ui.select(placeholder="Choose a preset…", custom_id="nst:pick-preset")
    async def pick(self, interaction: discord.Interaction[StyleBot], select: discord.ui.Select[Any]) -> None:
        channel = self.message.channel
        try:  # the guild's rules may have changed since the menu was opened
            admission = await self.cog.bot.gate.admit(Requester.of_interaction(interaction, channel.id), self.refs)
        except UserFacingError as exc:
            await interaction.response.edit_message(content=exc.message, view=None)
            return
        await interaction.response.edit_message(content=f"Stylizing with **{select.values[0]}**…", view=None)

        async def send_status(text: str, view: discord.ui.View) -> discord.Message | None:
            return await channel.send(text, view=view, reference=self.message.to_reference(fail_if_not_exists=False))

        try:
            await self.cog.start(admission, self.refs, StyleOptions(preset=select.values[0]), send_status)
        except UserFacingError as exc:
            await interaction.followup.send(exc.message, ephemeral=True)


async def _tell(interaction: discord.Interaction[Any], text: str) -> None:
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


def _seed() -> int:
    return random.randint(0, SEED_MAX)


async def setup(bot: StyleBot) -> None:
    await bot.add_cog(Stylize(bot))
