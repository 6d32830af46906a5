"""`python -m nst_engine fetch-presets`: download the default style presets a manifest names, verify, install.

The manifest (`presets/manifest.json`) lists public-domain paintings: name, title, artist, year, a URL that names
an immutable file, its size in bytes, its sha256 and a licence line. For each entry the file
`<presets dir>/<name><extension of the URL>` is

* kept as it is if it is already there with the right sha256 (nothing is downloaded);
* otherwise downloaded (a timeout per read and for the whole file, at most the manifest's size + 1 bytes are read),
  checked (size, sha256, and `imaging.decode_image`: the engine's own decoder and limits) and written atomically
  (a temporary file in the same directory, then `os.replace`), readable by everyone (0644).

A file that is there with other bytes is left alone and reported (`--force` replaces it): it may be the admin's
own picture. Transient failures (timeouts, connection errors, HTTP 5xx/429) are retried. Every failure is one
line on stderr; the exit status is 0 when every preset is in place, 1 when some are not, 2 for a bad manifest or
bad arguments. The Docker build runs this command (with internet access); the engine itself never downloads.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import posixpath
import re
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .images.codec import DEFAULT_MAX_BYTES, ImageError, decode_image
from .images.presets import EXTENSIONS, NAME_RE, NAME_RULE
from .service.settings import EngineSettings, SettingsError

PROG = "python -m nst_engine fetch-presets"
DEFAULT_MANIFEST = Path("presets/manifest.json")
# Seconds for one connect or one read, and for a whole file: the presets are < 1 MB each, so a minute is
# generous even on a slow build network, and a stalled server cannot hang a `docker build` forever.
DEFAULT_TIMEOUT_S = 60.0
# Tries after the first for transient failures, with RETRY_DELAY_S, then twice that, between them.
DEFAULT_RETRIES = 2
RETRY_DELAY_S = 1.0
# No preset may be larger than what the engine accepts as a preset or upload anyway.
MAX_PRESET_BYTES = DEFAULT_MAX_BYTES
CHUNK_BYTES = 64 * 1024
USER_AGENT = "nst-discord-fetch-presets/1"
REQUIRED_KEYS = ("name", "title", "artist", "year", "url", "bytes", "sha256", "license")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """The manifest cannot be used; the message is one line."""


class FetchError(RuntimeError):
    """One preset could not be put in place; the message is one line."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class PresetSource:
    name: str
    title: str
    artist: str
    year: str
    url: str
    size: int
    sha256: str
    license: str

    @property
    def filename(self) -> str:
        return self.name + _extension(self.url)


def _extension(url: str) -> str:
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return posixpath.splitext(path)[1].lower()


def parse_manifest(data: Any) -> list[PresetSource]:
    """Validate a decoded manifest (`{"presets": [...]}`); ManifestError names the first problem."""
    if not isinstance(data, dict) or not isinstance(data.get("presets"), list):
        raise ManifestError('the manifest must be a JSON object with a "presets" list')
    entries: list[PresetSource] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["presets"]):
        where = f"presets[{i}]"
        if not isinstance(raw, dict):
            raise ManifestError(f"{where} must be an object")
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise ManifestError(f"{where} lacks {', '.join(missing)}")
        name = raw["name"]
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ManifestError(f"{where}: name {name!r} is not a valid preset name ({NAME_RULE})")
        where = f"preset {name!r}"
        if name in seen:
            raise ManifestError(f"{where} is listed twice")
        seen.add(name)
        for key in ("title", "artist", "year", "url", "sha256", "license"):
            if not isinstance(raw[key], str) or not raw[key].strip():
                raise ManifestError(f"{where}: {key} must be a non-empty string")
        url = raw["url"]
        if urllib.parse.urlsplit(url).scheme not in ("https", "http") or not urllib.parse.urlsplit(url).netloc:
            raise ManifestError(f"{where}: url must be an http(s) URL, got {url!r}")
        if _extension(url) not in EXTENSIONS:
            raise ManifestError(f"{where}: the url must end in one of {', '.join(EXTENSIONS)}, got {url!r}")
        size = raw["bytes"]
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_PRESET_BYTES:
            raise ManifestError(f"{where}: bytes must be a whole number from 1 to {MAX_PRESET_BYTES}, got {size!r}")
        if not _SHA256_RE.fullmatch(raw["sha256"]):
            raise ManifestError(f"{where}: sha256 must be 64 lowercase hex digits")
        entries.append(PresetSource(name, raw["title"], raw["artist"], raw["year"], url, size, raw["sha256"],
                                    raw["license"]))
    return entries


def load_manifest(path: Path) -> list[PresetSource]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    try:
        return parse_manifest(data)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, *, limit: int, timeout: float) -> bytes:
    """The body of `url`, at most `limit` bytes (FetchError beyond it), within `timeout` seconds in all."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise FetchError(f"the server sends {int(length)} bytes; at most {limit} are expected")
            chunks: list[bytes] = []
            received = 0
            while chunk := response.read(min(CHUNK_BYTES, limit + 1 - received)):
                chunks.append(chunk)
                received += len(chunk)
                if received > limit:
                    raise FetchError(f"the file is larger than the {limit} bytes expected")
                if time.monotonic() > deadline:
                    raise FetchError(f"timed out after {timeout:g} s", transient=True)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        exc.close()
        transient = exc.code >= 500 or exc.code in (408, 429)
        raise FetchError(f"HTTP {exc.code} {exc.reason}", transient=transient) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise FetchError(f"timed out after {timeout:g} s", transient=True) from None
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise FetchError(f"cannot connect: {text}", transient=True) from None
    except TimeoutError:
        raise FetchError(f"timed out after {timeout:g} s", transient=True) from None
    except (ConnectionError, http.client.HTTPException) as exc:
        raise FetchError(f"connection failed: {exc.__class__.__name__}: {exc}", transient=True) from None


def verify(entry: PresetSource, data: bytes) -> None:
    """Size, sha256, then a full decode with the engine's limits; FetchError says which check failed."""
    if len(data) != entry.size:
        raise FetchError(f"got {len(data)} bytes, the manifest says {entry.size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise FetchError(f"sha256 mismatch: got {digest}, the manifest says {entry.sha256}")
    try:
        decode_image(data, name=f"preset {entry.name!r}")
    except ImageError as exc:
        raise FetchError(f"not a usable image: {exc.message}") from None


def write_atomic(target: Path, data: bytes) -> None:
    """Write `data` to `target` via a hidden temporary file in the same directory and os.replace."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the engine may run as another user than this command
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_one(entry: PresetSource, directory: Path, *, timeout: float = DEFAULT_TIMEOUT_S,
              retries: int = DEFAULT_RETRIES, retry_delay: float = RETRY_DELAY_S, force: bool = False) -> str:
    """Put one preset in place; returns 'present' or 'downloaded', raises FetchError."""
    target = directory / entry.filename
    if target.is_file():
        if target.stat().st_size == entry.size and _sha256_of(target) == entry.sha256:
            return "present"
        if not force:
            raise FetchError(f"{target} exists with other contents; it was left alone "
                             "(remove it, or pass --force to replace it)")
    elif target.exists():
        raise FetchError(f"{target} exists and is not a file")
    for attempt in range(retries + 1):
        try:
            data = download(entry.url, limit=entry.size, timeout=timeout)
            break
        except FetchError as exc:
            if not exc.transient or attempt == retries:
                raise FetchError(f"{entry.url}: {exc}") from None
            time.sleep(retry_delay * 2**attempt)
    try:
        verify(entry, data)
    except FetchError as exc:
        raise FetchError(f"{entry.url}: {exc}") from None
    try:
        write_atomic(target, data)
    except OSError as exc:
        raise FetchError(f"cannot write {target}: {exc.strerror or exc}") from None
    return "downloaded"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Download the default style presets named in a manifest into the presets directory, "
                    "checking each file's size, sha256 and image data. Files already there with the right "
                    "sha256 are kept.",
    )
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST,
                   help=f"the manifest (default: {DEFAULT_MANIFEST})")
    p.add_argument("--dir", type=Path, dest="directory",
                   help="the presets directory (default: ENGINE_PRESETS_DIR, else 'presets')")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds allowed per file (default: {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                   help=f"tries after the first on timeouts, connection errors and HTTP 5xx "
                        f"(default: {DEFAULT_RETRIES})")
    p.add_argument("--force", action="store_true", help="replace files that exist with other contents")
    return p


def _default_directory(environ: Mapping[str, str]) -> Path:
    """ENGINE_PRESETS_DIR, read (like every engine setting) by EngineSettings; SettingsError if they are invalid."""
    return EngineSettings.from_env(environ).presets_dir


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(list(argv))
    if not args.timeout > 0 or args.retries < 0:
        print(f"{PROG}: --timeout must be positive and --retries not negative", file=sys.stderr)
        return 2
    try:
        entries = load_manifest(args.manifest)
        directory = args.directory or _default_directory(os.environ if environ is None else environ)
    except ManifestError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        print(f"{PROG}: {exc} (or pass --dir)", file=sys.stderr)
        return 2
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"{PROG}: cannot create {directory}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    failed = 0
    for entry in entries:
        try:
            outcome = fetch_one(entry, directory, timeout=args.timeout, retries=args.retries, force=args.force)
        except FetchError as exc:
            failed += 1
            print(f"{PROG}: {entry.name}: {exc}", file=sys.stderr)
            continue
        what = "already present" if outcome == "present" else f"downloaded ({entry.size} bytes)"
        print(f"{entry.name}: {what}: {directory / entry.filename} ({entry.title}, {entry.artist}, {entry.year})")
    ready = len(entries) - failed
    summary = f"{ready} of {len(entries)} presets ready in {directory}"
    if failed:
        print(f"{PROG}: {summary}; {failed} failed", file=sys.stderr)
        return 1
    print(summary)
    return 0
