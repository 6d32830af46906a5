"""The admission gate: the one way a job enters the bot, whatever the user clicked or typed.

Every entry point (prefix and slash commands, the context menus, the preset picker, the result buttons, and
any cog still to come) does the same two steps:

1. `Gate.admit(requester, images)` reads the guild's settings once and refuses, with the same sentence
   whichever way the user came in, a channel outside the allow-list, a user or guild over its limits or a
   user in their cooldown, and images that are not on the allowed CDN hosts (or too large). It is cheap (one
   SQLite read, no download), so handlers call it first. It returns an `Admission`: the request with the
   settings that were read for it, so nothing downstream reads them again.
2. `Gate.create_job(admission, ...)`, after the inputs are downloaded, registers the job with the scheduler
   (the limits again, atomically: other jobs may have come in during the download), journals it, posts its
   status and hands it to the runner. It needs an `Admission`, and only `admit` makes one, so a new entry
   point cannot start a job without passing the gate.
"""
from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import discord

from . import attachments, render
from .errors import LimitReached
from .jobs import GuildConfig, JobParams, JobRecord
from .scheduler import Limits
from .views import running_view

if TYPE_CHECKING:
    from discord.ext import commands

    from .client import StyleBot

log = logging.getLogger(__name__)

SendStatus = Callable[[str, discord.ui.View], Awaitable[discord.Message | None]]
"""Posts a job's first status message (a reply, a followup, a channel message: the entry point knows)."""


def is_admin(user: discord.abc.User | discord.Member, permissions: discord.Permissions | None = None) -> bool:
    """Manage Server or Administrator, from an interaction's resolved permissions or the member's."""
    if permissions is not None and (permissions.manage_guild or permissions.administrator):
        return True
    return isinstance(user, discord.Member) and (user.guild_permissions.manage_guild
                                                  or user.guild_permissions.administrator)


def channel_refusal(config: GuildConfig, channel_id: int) -> str | None:
    """The sentence that refuses `channel_id`, or None if the guild allows it (an empty list allows all)."""
    if not config.allowed_channels or channel_id in config.allowed_channels:
        return None
    where = ", ".join(f"<#{c}>" for c in config.allowed_channels)
    return f"I only stylize in {where} on this server."


@dataclass(frozen=True)
class Requester:
    """Who asks, and the channel the job belongs to (where its status and result go)."""

    user_id: int
    guild_id: int | None
    channel_id: int
    admin: bool = False
    """Manage Server: exempt from the cooldown."""

    @classmethod
    def of(cls, user: discord.abc.User, guild_id: int | None, channel_id: int,
           permissions: discord.Permissions | None = None) -> Requester:
        return cls(user.id, guild_id, channel_id, is_admin(user, permissions))

    @classmethod
    def of_context(cls, ctx: commands.Context[Any]) -> Requester:
        """A prefix or hybrid command: the author, in the command's channel."""
        permissions = ctx.interaction.permissions if ctx.interaction is not None else None
        return cls.of(ctx.author, ctx.guild.id if ctx.guild else None, ctx.channel.id, permissions)

    @classmethod
    def of_interaction(cls, interaction: discord.Interaction[Any], channel_id: int | None = None) -> Requester:
        """A menu, button or select: the user who clicked, in `channel_id` (default: the interaction's)."""
        where = channel_id if channel_id is not None else interaction.channel_id
        assert where is not None  # every interaction we register comes from a channel
        return cls.of(interaction.user, interaction.guild_id, where, interaction.permissions)

    @property
    def mention(self) -> str:
        return f"<@{self.user_id}>"


@dataclass(frozen=True)
class Admission:
    """A request the gate let in, with the guild's settings as read for it. Made only by `Gate.admit`."""

    requester: Requester
    config: GuildConfig
    limits: Limits
    max_size: int
    """The largest output size on this guild."""


class Gate:
    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot

    async def admit(self, requester: Requester, images: Sequence[attachments.ImageRef] = (), *,
                    starts_job: bool = True) -> Admission:
        """Refuse (LimitReached, BadAttachment) or let in; no download. `starts_job=False` is for what only
        uses the channel and images (e.g. saving a style): the job limits and cooldown do not apply."""
        config, limits, max_size = await self.bot.guild_config(requester.guild_id)
        refusal = channel_refusal(config, requester.channel_id)
        if refusal is not None:
            raise LimitReached(refusal)
        self.check_images(images)
        if starts_job:
            self.bot.scheduler.check(requester.user_id, requester.guild_id, limits, exempt=requester.admin)
        return Admission(requester, config, limits, max_size)

    def check_images(self, images: Sequence[attachments.ImageRef]) -> None:
        """BadAttachment unless every image is on an allowed host, declares an image type and is small enough."""
        s = self.bot.settings
        for ref in images:
            attachments.check(ref, max_bytes=s.max_attachment_bytes, allowed_hosts=s.allowed_cdn_hosts)

    async def create_job(self, admission: Admission, *, content: bytes, content_name: str, style: bytes | None,
                         style_name: str | None, params: JobParams, send_status: SendStatus,
                         reply_to: int | None = None, parent_id: str | None = None) -> JobRecord:
        """Register (limits), journal (inputs included), tell the user, and hand the job to the runner.
        The only place a job is created."""
        bot = self.bot
        who = admission.requester
        if params.size > admission.max_size:  # e.g. Again on a job made before the guild lowered its maximum
            params = replace(params, size=admission.max_size)
        job_id = secrets.token_hex(6)
        bot.scheduler.admit(job_id, who.user_id, who.guild_id, admission.limits, exempt=who.admin)
        job = JobRecord(id=job_id, guild_id=who.guild_id, channel_id=who.channel_id, user_id=who.user_id,
                        params=params, content_name=content_name, style_name=style_name, reply_to=reply_to,
                        parent_id=parent_id)
        try:
            await bot.journal.add_job(job, content, style)
        except BaseException:
            bot.scheduler.release(job_id)
            raise
        ahead = bot.scheduler.ahead_of(job_id)
        text = (render.waiting_own_text(who.mention, job_id, ahead) if ahead
                else render.queued_text(who.mention, job_id, None, None))
        try:
            message = await send_status(text, running_view(job_id))
        except discord.HTTPException as exc:  # the runner posts a status message of its own
            log.warning("could not post the status of job %s: %s", job_id, exc)
            message = None
        if message is not None:
            job = await bot.journal.update_job(job, status_message_id=message.id)
        log.info("job %s accepted from user %s in channel %s", job_id, who.user_id, who.channel_id)
        bot.runner.spawn(job)
        return job
