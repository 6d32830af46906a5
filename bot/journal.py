"""The bot's SQLite store (persistence only; the models are in jobs.py): the job journal, per-guild settings and presets, remembered styles.

Every accepted job is written here (with its input images) before the user is told it is queued, so a
restarted bot finds it again. One connection, used only from one dedicated thread: the event loop never
waits on disk.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from .jobs import FINAL_STATES, GuildConfig, JobParams, JobRecord, JobState

log = logging.getLogger(__name__)
T = TypeVar("T")

# The images of finished jobs are kept this long for the result buttons (Again, Stronger...), then
# deleted, so the database does not grow with every picture ever posted.
INPUT_RETENTION_SECONDS = 7 * 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    guild_id INTEGER,
    channel_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    reply_to INTEGER,
    status_message_id INTEGER,
    state TEXT NOT NULL,
    engine_url TEXT,
    engine_job_id TEXT,
    params TEXT NOT NULL,
    content_name TEXT NOT NULL,
    style_name TEXT,
    parent_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS job_inputs (
    job_id TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    content BLOB NOT NULL,
    style BLOB
);
CREATE TABLE IF NOT EXISTS guild_settings (
    guild_id INTEGER PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS presets (
    guild_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    image BLOB NOT NULL,
    added_by INTEGER NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (guild_id, name)
);
CREATE TABLE IF NOT EXISTS user_styles (
    user_id INTEGER PRIMARY KEY,
    image BLOB NOT NULL,
    filename TEXT NOT NULL,
    saved_at REAL NOT NULL
);
"""


class Journal:
    """`await Journal.open(path)`; every method runs its SQL on the journal's own thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bot-journal")
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path) -> Journal:
        journal = cls(Path(path))
        await journal._run(journal._connect)
        return journal

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _connect(self) -> None:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the journal is closed")
        return self._conn

    # -- jobs --------------------------------------------------------------------------------------------------

    async def add_job(self, job: JobRecord, content: bytes, style: bytes | None) -> None:
        def add() -> None:
            db = self._db()
            with db:
                db.execute("BEGIN")
                db.execute(
                    "INSERT INTO jobs (id, created_at, updated_at, guild_id, channel_id, user_id, reply_to,"
                    " status_message_id, state, engine_url, engine_job_id, params, content_name, style_name,"
                    " parent_id, attempts, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (job.id, job.created_at, job.updated_at, job.guild_id, job.channel_id, job.user_id, job.reply_to,
                     job.status_message_id, job.state, job.engine_url, job.engine_job_id, job.params.to_json(),
                     job.content_name, job.style_name, job.parent_id, job.attempts, job.error))
                db.execute("INSERT INTO job_inputs (job_id, content, style) VALUES (?,?,?)", (job.id, content, style))
                self._prune_inputs(db, job.created_at - INPUT_RETENTION_SECONDS)

        await self._run(add)

    @staticmethod
    def _prune_inputs(db: sqlite3.Connection, before: float) -> None:
        db.execute(
            "DELETE FROM job_inputs WHERE job_id IN (SELECT id FROM jobs WHERE state IN (?, ?, ?) AND updated_at < ?)",
            (*sorted(FINAL_STATES), before))

    async def update_job(self, job: JobRecord, **changes: Any) -> JobRecord:
        """Write `changes` (JobRecord field names) and return the updated record."""
        updated = replace(job, **changes, updated_at=time.time())
        columns = {**changes, "updated_at": updated.updated_at}
        if "params" in columns:
            columns["params"] = updated.params.to_json()
        sql = f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in columns)} WHERE id = ?"
        await self._run(lambda: self._db().execute(sql, (*columns.values(), job.id)))
        return updated

    async def get_job(self, job_id: str) -> JobRecord | None:
        row = await self._run(lambda: self._db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return _job_of(row) if row is not None else None

    async def inputs(self, job_id: str) -> tuple[bytes, bytes | None] | None:
        row = await self._run(
            lambda: self._db().execute("SELECT content, style FROM job_inputs WHERE job_id = ?", (job_id,)).fetchone())
        return (bytes(row["content"]), bytes(row["style"]) if row["style"] is not None else None) if row else None

    async def unfinished_jobs(self) -> list[JobRecord]:
        rows = await self._run(lambda: self._db().execute(
            "SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY created_at", (JobState.PENDING, JobState.SUBMITTED)).fetchall())
        return [_job_of(r) for r in rows]

    # -- guild settings ------------------------------------------------------------------------------------

    async def guild_config(self, guild_id: int | None) -> GuildConfig:
        if guild_id is None:
            return GuildConfig()
        row = await self._run(lambda: self._db().execute(
            "SELECT data FROM guild_settings WHERE guild_id = ?", (guild_id,)).fetchone())
        return GuildConfig.from_json(row["data"]) if row else GuildConfig()

    async def set_guild_config(self, guild_id: int, config: GuildConfig) -> None:
        await self._run(lambda: self._db().execute(
            "INSERT INTO guild_settings (guild_id, data) VALUES (?, ?) "
            "ON CONFLICT(guild_id) DO UPDATE SET data = excluded.data", (guild_id, config.to_json())))

    # -- guild presets -------------------------------------------------------------------------------------

    async def add_preset(self, guild_id: int, name: str, image: bytes, added_by: int) -> None:
        await self._run(lambda: self._db().execute(
            "INSERT INTO presets (guild_id, name, image, added_by, added_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT(guild_id, name) DO UPDATE SET image = excluded.image, added_by = excluded.added_by, "
            "added_at = excluded.added_at", (guild_id, name, image, added_by, time.time())))

    async def remove_preset(self, guild_id: int, name: str) -> bool:
        cursor = await self._run(lambda: self._db().execute(
            "DELETE FROM presets WHERE guild_id = ? AND name = ?", (guild_id, name)))
        return cursor.rowcount > 0

    async def preset_names(self, guild_id: int | None) -> list[str]:
        if guild_id is None:
            return []
        rows = await self._run(lambda: self._db().execute(
            "SELECT name FROM presets WHERE guild_id = ? ORDER BY name", (guild_id,)).fetchall())
        return [r["name"] for r in rows]

    async def preset_image(self, guild_id: int | None, name: str) -> bytes | None:
        if guild_id is None:
            return None
        row = await self._run(lambda: self._db().execute(
            "SELECT image FROM presets WHERE guild_id = ? AND name = ?", (guild_id, name)).fetchone())
        return bytes(row["image"]) if row else None

    # -- remembered styles ("Use as style") -------------------------------------------------------------------

    async def set_user_style(self, user_id: int, image: bytes, filename: str) -> None:
        await self._run(lambda: self._db().execute(
            "INSERT INTO user_styles (user_id, image, filename, saved_at) VALUES (?,?,?,?) "
            "ON CONFLICT(user_id) DO UPDATE SET image = excluded.image, filename = excluded.filename, "
            "saved_at = excluded.saved_at", (user_id, image, filename, time.time())))

    async def user_style(self, user_id: int) -> tuple[bytes, str] | None:
        row = await self._run(lambda: self._db().execute(
            "SELECT image, filename FROM user_styles WHERE user_id = ?", (user_id,)).fetchone())
        return (bytes(row["image"]), row["filename"]) if row else None

    async def clear_user_style(self, user_id: int) -> None:
        await self._run(lambda: self._db().execute("DELETE FROM user_styles WHERE user_id = ?", (user_id,)))


def _job_of(row: sqlite3.Row) -> JobRecord:
    data = dict(row)
    data["params"] = JobParams.from_json(data["params"])
    return JobRecord(**data)
