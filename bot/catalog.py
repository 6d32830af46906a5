"""Preset names and images: per-guild presets (the bot's SQLite) over the engines' global ones (their presets
directory and builtins). A guild preset travels to the engine as a style image; a global one by name.
"""
from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .engine.base import Engine
from .errors import EngineError, UnknownPreset
from .journal import Journal
from .options import normalize_preset_name

log = logging.getLogger(__name__)

# How long the engines' preset list is trusted before it is asked again.
GLOBAL_TTL_S = 60.0


@dataclass(frozen=True)
class ResolvedPreset:
    name: str
    source: str
    """'guild' or 'global'."""
    image: bytes | None = None
    """The image of a guild preset (sent as the style file)."""


class PresetCatalog:
    def __init__(self, journal: Journal, engine: Engine, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.journal = journal
        self.engine = engine
        self._clock = clock
        self._global: tuple[float, list[str]] | None = None

    async def global_names(self) -> list[str] | None:
        """The engines' presets; None when no engine answers (and nothing is cached)."""
        now = self._clock()
        if self._global is not None and now - self._global[0] < GLOBAL_TTL_S:
            return self._global[1]
        try:
            names = await self.engine.presets()
        except EngineError as exc:
            log.info("could not list the engine's presets: %s", exc.code)
            return self._global[1] if self._global else None
        self._global = (now, names)
        return names

    def forget(self) -> None:
        self._global = None

    async def names(self, guild_id: int | None) -> list[tuple[str, str]]:
        """(name, 'guild'|'global'), guild presets first; a guild preset hides a global one of the same name."""
        guild = await self.journal.preset_names(guild_id)
        shown = set(guild)
        out = [(n, "guild") for n in guild]
        out += [(n, "global") for n in (await self.global_names() or []) if n not in shown]
        return out

    async def resolve(self, guild_id: int | None, name: str) -> ResolvedPreset:
        """UnknownPreset (with 'did you mean') if neither the guild nor the engines have it."""
        name = normalize_preset_name(name)
        image = await self.journal.preset_image(guild_id, name)
        if image is not None:
            return ResolvedPreset(name, "guild", image)
        global_names = await self.global_names()
        if global_names is None or name in global_names:  # engine offline: it checks the name itself later
            return ResolvedPreset(name, "global")
        known = [n for n, _ in await self.names(guild_id)]
        raise UnknownPreset(name, difflib.get_close_matches(name, known, n=3, cutoff=0.5))
