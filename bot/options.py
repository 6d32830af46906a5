"""The words after `!stylize`: a preset name and options, as people type them.

`!stylize starry strong size=768 keep-colours seed=7` and `/stylize preset:starry` both go through
`parse_options`. Pure functions, no Discord.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .errors import UsageError
from .render import STRENGTHS

PRESET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
PRESET_NAME_RULE = "1-32 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit"
_KEEP_COLOURS = {"keep-colours", "keep-colors", "keep_colours", "keep_colors", "keepcolours", "keepcolors",
                 "colours", "colors"}
_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}
_SIZE_RE = re.compile(r"^(\d{2,4})(px)?$")
_KEYED_RE = re.compile(r"^([a-z_-]+)[=:](.*)$")

USAGE = (
    "**How to use `{p}stylize`**\n"
    "• Attach two images: first the photo, then the style (a painting): `{p}stylize`\n"
    "• Attach a photo and name a preset: `{p}stylize mosaic` (`{p}presets` lists them)\n"
    "• Reply to a message with an image: `{p}stylize mosaic`\n"
    "Options: strength (`subtle`, `light`, `balanced`, `strong`, `bold`, `intense`), `size=768`, "
    "`keep-colours`, `seed=42`. Slash command: `/stylize`."
)


def usage(prefix: str) -> str:
    return USAGE.format(p=prefix)


@dataclass(frozen=True)
class StyleOptions:
    preset: str | None = None
    strength: str | None = None
    size: int | None = None
    keep_colours: bool | None = None
    seed: int | None = None

    def merged(self, **explicit: object) -> StyleOptions:
        """Options given as separate slash options win over words in the text."""
        return replace(self, **{k: v for k, v in explicit.items() if v is not None})


def normalize_preset_name(name: str) -> str:
    folded = name.strip().casefold()
    if not PRESET_NAME_RE.fullmatch(folded):
        raise UsageError(f"`{name[:40]}` is not a valid preset name ({PRESET_NAME_RULE}).")
    return folded


def parse_options(text: str | None, prefix: str = "!") -> StyleOptions:
    """Raises UsageError for words it does not understand (with the usage text)."""
    opts: dict[str, object] = {}
    words = (text or "").replace(",", " ").split()
    i = 0
    while i < len(words):
        raw = words[i]
        word = raw.casefold().strip("`")
        i += 1
        keyed = _KEYED_RE.match(word)
        if keyed:
            _option(opts, keyed.group(1), keyed.group(2), raw, prefix)
        elif word in STRENGTHS:
            opts["strength"] = word
        elif word in _KEEP_COLOURS:
            opts["keep_colours"] = True
        elif word == "keep" and i < len(words) and words[i].casefold() in ("colours", "colors"):
            opts["keep_colours"] = True
            i += 1
        elif _SIZE_RE.match(word):
            opts["size"] = int(_SIZE_RE.match(word).group(1))  # type: ignore[union-attr]
        elif "preset" not in opts:
            opts["preset"] = normalize_preset_name(raw.strip("`"))
        else:
            raise UsageError(f"I don't understand `{raw[:40]}`.\n{usage(prefix)}")
    return StyleOptions(**opts)  # type: ignore[arg-type]


def _option(opts: dict[str, object], key: str, value: str, raw: str, prefix: str) -> None:
    if key in ("strength", "s"):
        if value not in STRENGTHS:
            raise UsageError(f"Strength must be one of {', '.join(f'`{s}`' for s in STRENGTHS)}.")
        opts["strength"] = value
    elif key == "size":
        match = _SIZE_RE.match(value)
        if not match:
            raise UsageError("Size must be a number of pixels, e.g. `size=768`.")
        opts["size"] = int(match.group(1))
    elif key == "seed":
        if not value.isdigit() or len(value) > 10:
            raise UsageError("Seed must be a whole number, e.g. `seed=42`.")
        opts["seed"] = int(value)
    elif key.replace("-", "_") in ("keep_colours", "keep_colors", "colours", "colors"):
        if value not in _TRUE | _FALSE:
            raise UsageError("keep-colours is `yes` or `no`.")
        opts["keep_colours"] = value in _TRUE
    elif key in ("preset", "style"):
        opts["preset"] = normalize_preset_name(value)
    else:
        raise UsageError(f"I don't know the option `{raw[:40]}`.\n{usage(prefix)}")
