"""The SQLite journal keeps a finished job's images only as long as its buttons need them."""
import time

import pytest

from bot.jobs import JobParams, JobRecord, JobState
from bot.journal import INPUT_RETENTION_SECONDS, Journal

pytestmark = pytest.mark.asyncio


def record(job_id: str, *, age: float = 0.0, state: str = JobState.DONE) -> JobRecord:
    at = time.time() - age
    return JobRecord(id=job_id, guild_id=1, channel_id=2, user_id=3, params=JobParams(size=64),
                     content_name="c.png", state=state, created_at=at, updated_at=at)


async def test_old_finished_inputs_are_pruned_when_a_job_is_added(tmp_path):
    async with await Journal.open(tmp_path / "j.sqlite3") as journal:
        old = INPUT_RETENTION_SECONDS + 60
        await journal.add_job(record("old-done", age=old), b"c1", b"s1")
        await journal.add_job(record("old-running", age=old, state=JobState.SUBMITTED), b"c2", None)
        await journal.add_job(record("recent-done", age=60), b"c3", None)
        await journal.add_job(record("new"), b"c4", b"s4")
        assert await journal.inputs("old-done") is None  # pruned: its buttons say to start anew
        assert await journal.get_job("old-done") is not None  # the record itself stays
        assert await journal.inputs("old-running") == (b"c2", None)  # unfinished jobs keep their images
        assert await journal.inputs("recent-done") == (b"c3", None)
        assert await journal.inputs("new") == (b"c4", b"s4")
