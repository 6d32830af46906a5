"""Named style presets: image files in a directory (a mounted volume in Docker), plus generated builtins.

A preset `starry` is the file `<directory>/starry.png` (or .jpg/.jpeg/.webp). Directory presets override
builtins of the same name. `key(name)` changes whenever the file changes, so the optimiser's cache of
style targets (Gram matrices) is reused for as long as the preset stays the same.

All methods do blocking file I/O or image work: the service calls them from a thread.
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from .codec import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, decode_image

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
NAME_RULE = "1-32 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit"
# Looked up in this order when several files share a name.
EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")
# Long side of generated builtins: style images are resized to the output anyway, and 512 px keeps the
# brush-stroke scale similar to typical paintings at the default output size.
BUILTIN_SIZE = 512
# Long side a stored preset is reduced to: outputs are at most a few thousand px, and a style image much
# larger than the output only costs decode time on every cache miss.
STORED_MAX_SIDE = 2048
# How many decoded directory presets to keep in memory (each a few MB as RGB).
_IMAGE_CACHE_ENTRIES = 16

Source = Literal["builtin", "directory"]


class PresetError(Exception):
    """A preset request we cannot honour; `code`/`message`/`status` are what the service answers."""

    code = "preset_error"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidPresetName(PresetError, ValueError):
    code = "invalid_preset_name"
    status = 400


class UnknownPreset(PresetError, KeyError):
    code = "unknown_preset"
    status = 404

    def __init__(self, name: str, suggestions: list[str]) -> None:
        hint = f" Did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"There is no preset called {name!r}.{hint}")
        self.name = name
        self.suggestions = suggestions


class BuiltinPreset(PresetError):
    code = "preset_is_builtin"
    status = 409


class PresetExists(PresetError):
    code = "preset_exists"
    status = 409


@dataclass(frozen=True)
class PresetInfo:
    name: str
    source: Source
    path: Path | None = None
    """The file, for directory presets."""
    bytes: int | None = None
    modified: float | None = None
    """mtime (seconds since the epoch), for directory presets."""
    overrides_builtin: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            "bytes": self.bytes,
            "modified": self.modified,
            "overrides_builtin": self.overrides_builtin,
        }


def normalize_name(name: str) -> str:
    """Case-fold and validate; InvalidPresetName otherwise."""
    folded = name.strip().casefold()
    if not NAME_RE.fullmatch(folded):
        raise InvalidPresetName(f"{name[:40]!r} is not a valid preset name ({NAME_RULE}).")
    return folded


class PresetLibrary:
    def __init__(
        self,
        directory: Path,
        *,
        builtins: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.builtins_enabled = builtins
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._builtin_images: dict[str, Image.Image] = {}
        self._file_images: dict[str, Image.Image] = {}  # key -> image

    # -- discovery ----------------------------------------------------------------------------------------

    def builtin_names(self) -> tuple[str, ...]:
        if not self.builtins_enabled:
            return ()
        from . import procedural  # deferred: only the service and CLI need the generators

        return tuple(normalize_name(n) for n in procedural.NAMES)

    def _directory_files(self) -> dict[str, Path]:
        """name -> file, the first extension in EXTENSIONS order winning."""
        found: dict[str, tuple[int, Path]] = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return {}
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            ext = ext.lower()
            if entry.name.startswith(".") or ext not in EXTENSIONS or not entry.is_file():
                continue
            name = stem.casefold()
            if not NAME_RE.fullmatch(name):
                log.debug("ignoring preset file with an invalid name: %s", entry.name)
                continue
            rank = EXTENSIONS.index(ext)
            if name not in found or rank < found[name][0]:
                found[name] = (rank, Path(entry.path))
        return {name: path for name, (_, path) in found.items()}

    def _file_for(self, name: str) -> Path | None:
        for ext in EXTENSIONS:
            for candidate in (self.directory / f"{name}{ext}", self.directory / f"{name}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
        # Mixed-case file names ('Starry.PNG'): fall back to a scan.
        return self._directory_files().get(name)

    def list(self) -> list[PresetInfo]:
        builtins = set(self.builtin_names())
        infos: dict[str, PresetInfo] = {n: PresetInfo(n, "builtin") for n in builtins}
        for name, path in self._directory_files().items():
            try:
                st = path.stat()
            except FileNotFoundError:  # removed while we listed
                continue
            infos[name] = PresetInfo(name, "directory", path, st.st_size, st.st_mtime, name in builtins)
        return [infos[n] for n in sorted(infos)]

    def names(self) -> list[str]:
        return [info.name for info in self.list()]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self._locate(name)
        except PresetError:
            return False
        return True

    def _unknown(self, name: str) -> UnknownPreset:
        return UnknownPreset(name, difflib.get_close_matches(name, self.names(), n=3, cutoff=0.6))

    def _locate(self, name: str) -> tuple[str, Path | None]:
        """-> (normalised name, file or None for a builtin); UnknownPreset if neither."""
        folded = normalize_name(name)
        path = self._file_for(folded)
        if path is not None:
            return folded, path
        if folded in self.builtin_names():
            return folded, None
        raise self._unknown(folded)

    # -- use --------------------------------------------------------------------------------------------

    def key(self, name: str) -> str:
        """A style-target cache key that changes when the preset's file changes."""
        folded, path = self._locate(name)
        if path is None:
            return f"preset:{folded}:builtin:{BUILTIN_SIZE}"
        st = path.stat()
        return f"preset:{folded}:{st.st_mtime_ns}:{st.st_size}"

    def load(self, name: str) -> Image.Image:
        return self.resolve(name)[0]

    def resolve(self, name: str) -> tuple[Image.Image, str]:
        """(RGB image, cache key), consistent with each other even if the file is replaced meanwhile."""
        folded, path = self._locate(name)
        if path is None:
            return self._builtin_image(folded), f"preset:{folded}:builtin:{BUILTIN_SIZE}"
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                key = f"preset:{folded}:{st.st_mtime_ns}:{st.st_size}"
                with self._lock:
                    cached = self._file_images.get(key)
                if cached is not None:
                    return cached, key
                data = f.read(self.max_bytes + 1)
        except FileNotFoundError:  # removed between _locate and open
            raise self._unknown(folded) from None
        if len(data) > self.max_bytes:
            raise ImageError("file_too_large", f"Preset {folded!r} is larger than the upload limit.", 413)
        image = decode_image(data, max_pixels=self.max_pixels, name=f"preset {folded!r}").rgb
        with self._lock:
            if len(self._file_images) >= _IMAGE_CACHE_ENTRIES:
                self._file_images.pop(next(iter(self._file_images)))
            self._file_images[key] = image
        return image, key

    def _builtin_image(self, name: str) -> Image.Image:
        with self._lock:
            cached = self._builtin_images.get(name)
        if cached is not None:
            return cached
        from . import procedural

        original = next(n for n in procedural.NAMES if normalize_name(n) == name)
        image = procedural.generate(original, size=BUILTIN_SIZE, seed=0).convert("RGB")
        with self._lock:
            self._builtin_images[name] = image
        return image

    # -- management -----------------------------------------------------------------------------------

    def add(self, name: str, data: bytes, *, replace: bool = False) -> PresetInfo:
        """Validate `data` as an image and store it as `<name>.png`, atomically (temp file + os.replace)."""
        folded = normalize_name(name)
        existing = self._file_for(folded)
        if existing is not None and not replace:
            raise PresetExists(f"A preset called {folded!r} already exists; remove it first or ask to replace it.")
        if len(data) > self.max_bytes:
            raise ImageError("file_too_large", "The preset image is larger than the upload limit.", 413)
        image = decode_image(data, max_pixels=self.max_pixels, name="preset image").rgb
        if max(image.size) > STORED_MAX_SIDE:
            image = image.copy()
            image.thumbnail((STORED_MAX_SIDE, STORED_MAX_SIDE), Image.Resampling.LANCZOS)
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{folded}.png"
        fd, tmp = tempfile.mkstemp(prefix=f".{folded}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                image.save(f, "PNG")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # Other files of the same name would shadow or confuse the new one.
        for ext in EXTENSIONS:
            for other in (self.directory / f"{folded}{ext}", self.directory / f"{folded}{ext.upper()}"):
                if other != target and other.exists():
                    other.unlink(missing_ok=True)
        st = target.stat()
        log.info("preset %r stored (%dx%d, %d bytes)", folded, image.width, image.height, st.st_size)
        return PresetInfo(folded, "directory", target, st.st_size, st.st_mtime, folded in self.builtin_names())

    def remove(self, name: str) -> None:
        """Delete a directory preset (a builtin of the same name becomes visible again)."""
        folded = normalize_name(name)
        removed = False
        while (path := self._file_for(folded)) is not None:
            path.unlink(missing_ok=True)
            removed = True
        if removed:
            log.info("preset %r removed", folded)
            return
        if folded in self.builtin_names():
            raise BuiltinPreset(f"{folded!r} is a built-in preset and cannot be removed.")
        raise self._unknown(folded)
