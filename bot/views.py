"""Job buttons as `DynamicItem`s: all their state is in the custom_id (`nst:<action>:<job id>`), so they keep
working after a restart. The job's parameters and inputs live in the journal.

The callback hands over to the Stylize cog (`on_job_button`), which checks who pressed and does the work.
"""
from __future__ import annotations

import logging
import re
from typing import Any

import discord

from . import render
from .jobs import JobRecord

log = logging.getLogger(__name__)

ACTIONS = ("again", "stronger", "weaker", "colours", "cancel")
CUSTOM_ID_RE = rf"nst:(?P<action>{'|'.join(ACTIONS)}):(?P<job_id>[0-9a-f]{{12}})"
_STYLES = {
    "again": discord.ButtonStyle.primary, "stronger": discord.ButtonStyle.secondary,
    "weaker": discord.ButtonStyle.secondary, "colours": discord.ButtonStyle.secondary,
    "cancel": discord.ButtonStyle.danger,
}
_LABELS = {"again": "Again", "stronger": "Stronger", "weaker": "Weaker", "colours": "Keep colours",
           "cancel": "Cancel"}
_EMOJI = {"again": "🎲", "stronger": "➕", "weaker": "➖", "colours": "🎨", "cancel": "✖️"}


def custom_id(action: str, job_id: str) -> str:
    return f"nst:{action}:{job_id}"


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID_RE):
    def __init__(self, action: str, job_id: str, *, label: str | None = None, disabled: bool = False) -> None:
        super().__init__(discord.ui.Button(
            label=label or _LABELS[action], style=_STYLES[action], emoji=_EMOJI[action],
            custom_id=custom_id(action, job_id), disabled=disabled,
        ))
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: discord.ui.Button[Any],
                             match: re.Match[str], /) -> JobButton:
        return cls(match["action"], match["job_id"], label=item.label)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog = interaction.client.get_cog("Stylize")
        if cog is None:
            await interaction.response.send_message("I am restarting; please press the button again in a minute.",
                                                    ephemeral=True)
            return
        await cog.on_job_button(interaction, self.action, self.job_id)


def running_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("cancel", job_id))
    return view


def result_view(job: JobRecord) -> discord.ui.View:
    level = job.params.strength
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("again", job.id))
    view.add_item(JobButton("stronger", job.id, disabled=render.stronger(level) is None))
    view.add_item(JobButton("weaker", job.id, disabled=render.weaker(level) is None))
    view.add_item(JobButton("colours", job.id, label="Restyle colours" if job.params.preserve_colors else None))
    return view
