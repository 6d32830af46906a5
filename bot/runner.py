"""The life of an accepted job: wait for the user's turn, submit to an engine, follow its progress, answer.

Every step is written to the journal first, so `recover()` after a restart picks each unfinished job up
where it was: reattached to its engine job if the engine still has it, resubmitted if not. All Discord
output goes through ordinary channel messages (never the 15-minute interaction token), so a job that
outlives the token, or the bot process, is still answered in its channel.
"""
from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import discord

from . import render
from .backoff import Backoff
from .engine.events import Final, FinalState, Notice, Preview, Progress, Queued, Started
from .engine.http import JobSpec
from .errors import EngineBusy, EngineError, EngineUnavailable, JobLost
from .jobs import JobRecord, JobState
from .views import result_view, running_view

if TYPE_CHECKING:
    from .client import StyleBot

log = logging.getLogger(__name__)

# Long side of the preview images the engine sends while a job runs (small: they are only a glimpse).
PREVIEW_SIDE = 192
# First wait before retrying an offline engine; doubles up to settings.engine_retry_max_seconds.
RETRY_START_S = 1.0
# When Discord still says the file is too large (413, code 40005): try again this many times, each time
# with this fraction of the bytes that were refused.
UPLOAD_RETRIES, UPLOAD_SHRINK = 6, 0.6
# Room left in the upload for the multipart framing and the message's JSON; the smallest budget the
# engine accepts (docs/engine-api.md, byte_budget).
UPLOAD_MARGIN, MIN_UPLOAD_BUDGET = 64 * 1024, 64 * 1024
# Engine notices the user sees as they happen (the others, such as a capped size, are in the final state).
USER_NOTICES = frozenset({"worker_lost", "worker_restarted", "oom_retry", "memory_capped"})
GENERIC_FAILURE = "something went wrong on my side. Please try again."
# On shutdown, how long the Discord requests that jobs had in flight may take to finish.
CLOSE_IO_TIMEOUT_S = 10.0
# The engine's answer to a token it does not know: for a job it accepted before, a restarted engine.
UNAUTHORIZED = 401
T = TypeVar("T")


class StatusMessage:
    """The job's status message in its channel: edited in place, throttled, recreated if it was deleted."""

    def __init__(self, runner: JobRunner, job: JobRecord) -> None:
        self.runner = runner
        self.bot = runner.bot
        self.job = job
        self.channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        self._last_edit = 0.0
        self._last_text: str | None = None
        self._last_preview = 0.0

    @property
    def mention(self) -> str:
        return f"<@{self.job.user_id}>"

    async def show(self, text: str, *, force: bool = False, preview: bytes | None = None) -> None:
        """Show `text` (and a preview image). Unforced updates within PROGRESS_EDIT_INTERVAL are dropped."""
        now = time.monotonic()
        if text == self._last_text and preview is None:
            return
        if not force and now - self._last_edit < self.bot.settings.progress_edit_interval:
            return
        kwargs: dict[str, Any] = {"content": text, "view": running_view(self.job.id)}
        if preview is not None:
            kwargs["attachments"] = [discord.File(io.BytesIO(preview), filename="preview.jpg")]
            self._last_preview = now
        self._last_edit, self._last_text = now, text
        await self._edit(**kwargs)

    def preview_due(self) -> bool:
        interval = self.bot.settings.preview_interval
        return interval > 0 and time.monotonic() - self._last_preview >= interval

    async def final(self, text: str, *, file: discord.File | None = None, view: discord.ui.View | None = None) -> None:
        await self._edit(content=text, attachments=[file] if file else [], view=view, raise_errors=file is not None)

    async def _edit(self, *, raise_errors: bool = False, **kwargs: Any) -> None:
        """Edit the status message (or post it, if there is none or it was deleted)."""
        message_id = self.job.status_message_id
        try:
            if message_id is not None:
                try:
                    await self.runner.shielded(self.channel.get_partial_message(message_id).edit(**kwargs))
                    return
                except discord.NotFound:
                    log.info("status message of job %s is gone; posting a new one", self.job.id)
            files = kwargs.pop("attachments", None) or None
            message = await self.runner.shielded(self.channel.send(
                **kwargs, files=files, allowed_mentions=discord.AllowedMentions(users=True)))
            self.job = await self.bot.journal.update_job(self.job, status_message_id=message.id)
        except discord.HTTPException as exc:
            if raise_errors:
                raise
            log.warning("could not update the status of job %s: %s", self.job.id, exc)


class JobRunner:
    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancelled_by: dict[str, str] = {}
        self._started: set[str] = set()
        self._delivering: set[str] = set()
        self._io: set[asyncio.Task[Any]] = set()
        self._closing = False

    async def shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a Discord request so that cancelling the job (Cancel button, shutdown) does not cut it off:
        discord.py's rate limiter blocks its bucket for 30 s when a request is cancelled in flight."""
        task = asyncio.ensure_future(coro)
        self._io.add(task)
        task.add_done_callback(self._io.discard)
        return await asyncio.shield(task)

    # -- lifecycle --------------------------------------------------------------------------------------------

    def spawn(self, job: JobRecord) -> None:
        if job.id in self._tasks or self._closing:
            return
        self._tasks[job.id] = asyncio.create_task(self._run(job), name=f"nst-job-{job.id}")

    async def recover(self) -> int:
        """Pick up every unfinished job of the journal (after a restart); returns how many."""
        jobs = await self.bot.journal.unfinished_jobs()
        for job in jobs:
            self.bot.scheduler.restore(job.id, job.user_id, job.guild_id)
        for job in jobs:
            self.spawn(job)
        if jobs:
            log.info("recovered %d unfinished job(s) from the journal", len(jobs))
        return len(jobs)

    async def close(self) -> None:
        """Stop following jobs; they stay in the journal and are picked up by the next start."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._io:  # Discord requests the jobs had in flight
            await asyncio.wait(set(self._io), timeout=CLOSE_IO_TIMEOUT_S)

    def running(self, job_id: str) -> bool:
        return job_id in self._tasks

    async def cancel(self, job: JobRecord, by: str) -> bool:
        """Cancel a job (at the engine too); False if it already finished or is being delivered."""
        task = self._tasks.get(job.id)
        if task is None or job.id in self._delivering or job.finished:
            return False
        self._cancelled_by[job.id] = by
        # A task cancelled before its first step never enters _run's try block (nothing would answer
        # the user); one that has not started yet sees the flag when it does.
        if job.id in self._started:
            task.cancel()
        return True

    # -- one job ------------------------------------------------------------------------------------------------

    async def _run(self, job: JobRecord) -> None:
        self._started.add(job.id)
        status = StatusMessage(self, job)
        try:
            if job.id in self._cancelled_by:
                raise asyncio.CancelledError  # the Cancel button came before this task's first step
            ahead = self.bot.scheduler.ahead_of(job.id)
            if ahead:
                await status.show(render.waiting_own_text(status.mention, job.id, ahead), force=True)
                await self.bot.scheduler.wait_turn(job.id)
            await self._drive(status)
        except asyncio.CancelledError:
            if self._closing or job.id not in self._cancelled_by:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await self._finish_cancelled(status)
        except Exception:
            log.exception("job %s failed in the bot", job.id)
            await self._finish(status, JobState.FAILED, render.failed_text(status.mention, job.id, GENERIC_FAILURE),
                               error="internal error")
        finally:
            if not self._closing:
                self.bot.scheduler.release(job.id)
            self._tasks.pop(job.id, None)
            self._cancelled_by.pop(job.id, None)
            self._started.discard(job.id)
            self._delivering.discard(job.id)

    async def _drive(self, status: StatusMessage) -> None:
        backoff = Backoff(RETRY_START_S, self.bot.settings.engine_retry_max_seconds)
        while True:
            job = status.job
            if job.engine_job_id is not None and job.engine_url not in self.bot.engine.urls:
                # Submitted to an engine this process does not use: the embedded engine of an earlier start
                # (each start gets a new port and token), or an engine since removed from ENGINE_URLS.
                log.info("job %s was on %s, an engine no longer in use; resubmitting", job.id, job.engine_url)
                status.job = await self.bot.journal.update_job(job, state=JobState.PENDING, engine_url=None,
                                                               engine_job_id=None)
                continue
            if job.engine_job_id is None:
                try:
                    submitted = await self.bot.engine.submit(await self._spec(job))
                except EngineUnavailable:
                    await status.show(render.offline_text(status.mention, job.id), force=True)
                    await asyncio.sleep(backoff.next())
                    continue
                except EngineBusy as exc:
                    await status.show(render.busy_text(status.mention, job.id), force=True)
                    await asyncio.sleep(backoff.next(exc.retry_after))
                    continue
                except EngineError as exc:
                    await self._finish(status, JobState.FAILED, render.failed_text(status.mention, job.id, exc.message),
                                       error=exc.code)
                    return
                status.job = await self.bot.journal.update_job(
                    job, state=JobState.SUBMITTED, engine_url=submitted.engine, engine_job_id=submitted.job_id,
                    attempts=job.attempts + 1)
                backoff.reset()
                continue
            try:
                final = await self._follow(status)
            except JobLost:
                log.info("engine lost job %s (%s); resubmitting", job.id, job.engine_job_id)
                status.job = await self.bot.journal.update_job(job, state=JobState.PENDING, engine_url=None, engine_job_id=None)
                continue
            except EngineUnavailable as exc:
                log.info("engine unreachable for job %s: %s", job.id, exc.detail)
                await status.show(render.offline_text(status.mention, job.id), force=True)
                await asyncio.sleep(backoff.next())
                continue
            except EngineError as exc:
                if exc.status != UNAUTHORIZED:
                    raise
                # Another token at the same address: a new engine instance, which never had this job.
                log.info("engine %s no longer takes this job's token (%s); resubmitting", job.engine_url, job.id)
                status.job = await self.bot.journal.update_job(job, state=JobState.PENDING, engine_url=None, engine_job_id=None)
                continue
            backoff.reset()
            try:
                if await self._conclude(status, final):
                    return
            except JobLost:
                continue  # the result is gone (the engine restarted): _deliver put the job back to pending
            except EngineUnavailable as exc:
                # The engine went away between the final event and the result: follow the job again.
                self._delivering.discard(job.id)
                log.info("could not fetch the result of job %s: %s", job.id, exc.detail)
                await status.show(render.offline_text(status.mention, job.id), force=True)
                await asyncio.sleep(backoff.next())

    async def _follow(self, status: StatusMessage) -> Final:
        """Follow the engine's events, showing position and progress; returns the final one."""
        job = status.job
        assert job.engine_url and job.engine_job_id
        mention = status.mention
        preview = PREVIEW_SIDE if self.bot.settings.preview_interval > 0 else None
        last_progress: Progress | None = None
        first_position = True
        async for event in self.bot.engine.events(job.engine_url, job.engine_job_id, preview=preview):
            match event:
                case Queued(position=position, eta_s=eta):
                    await status.show(render.queued_text(mention, job.id, position, eta), force=first_position)
                    first_position = False
                case Started():
                    await status.show(render.started_text(mention, job.id), force=True)
                case Progress():
                    last_progress = event
                    await status.show(render.progress_text(mention, job.id, event))
                case Preview(image=image) if status.preview_due():
                    text = render.progress_text(mention, job.id, last_progress) if last_progress else (
                        render.started_text(mention, job.id))
                    await status.show(text, force=True, preview=image)
                case Notice(message=message) if event.code in USER_NOTICES:
                    await status.show(render.notice_text(mention, job.id, message), force=True)
                case Final():
                    return event
        raise EngineUnavailable("the event stream ended without a final event")

    async def _conclude(self, status: StatusMessage, final: Final) -> bool:
        """Answer the job from its final engine event; False when it must be resubmitted."""
        job = status.job
        if final.state is FinalState.DONE:
            await self._deliver(status, final)
            return True
        if final.state is FinalState.EXPIRED or (
                final.state is FinalState.CANCELLED and final.error_code == "engine_shutdown"):
            log.info("job %s ended %s at the engine (%s); resubmitting", job.id, final.state, final.error_code)
            status.job = await self.bot.journal.update_job(job, state=JobState.PENDING, engine_url=None,
                                                           engine_job_id=None)
            return False
        if final.state is FinalState.CANCELLED:
            await self._finish_cancelled(status)
            return True
        message = final.error_message or (
            "it took too long." if final.state is FinalState.TIMED_OUT else GENERIC_FAILURE)
        await self._finish(status, JobState.FAILED, render.failed_text(status.mention, job.id, message),
                           error=final.error_code or final.state.value)
        return True

    async def _deliver(self, status: StatusMessage, final: Final) -> None:
        job = status.job
        self._delivering.add(job.id)
        assert job.engine_url and job.engine_job_id
        try:
            data = await self.bot.engine.result(job.engine_url, job.engine_job_id)
        except EngineError as exc:
            if exc.status in (UNAUTHORIZED, 404, 409, 410):  # another engine instance, or forgotten: run it again
                self._delivering.discard(job.id)
                status.job = await self.bot.journal.update_job(job, state=JobState.PENDING, engine_url=None,
                                                               engine_job_id=None)
                raise JobLost(job.engine_job_id) from None
            raise
        text = render.done_text(status.mention, job.id, job.params, *(render.image_size(data) or (None, None)),
                                seconds=final.run_s)
        for attempt in range(UPLOAD_RETRIES + 1):
            try:
                await status.final(text, file=discord.File(io.BytesIO(data), filename=f"stylized-{job.id}"
                                                           f"{render.extension_of(data)}"), view=result_view(job))
                break
            except discord.HTTPException as exc:
                # The channel's real limit is lower than we knew: the engine encodes it smaller, and again.
                if not (exc.status == 413 or exc.code == 40005) or attempt == UPLOAD_RETRIES:
                    raise
                budget = max(MIN_UPLOAD_BUDGET, int(len(data) * UPLOAD_SHRINK))
                log.info("job %s: the result was too large for the channel; asking for %d bytes", job.id, budget)
                data = await self.bot.engine.result(job.engine_url, job.engine_job_id, max_bytes=budget)
        status.job = await self.bot.journal.update_job(status.job, state=JobState.DONE, error=None)
        log.info("job %s done (%d bytes)", job.id, len(data))

    async def _finish(self, status: StatusMessage, state: str, text: str, *, error: str | None = None) -> None:
        await status.final(text, view=None)
        status.job = await self.bot.journal.update_job(status.job, state=state, error=error)

    async def _finish_cancelled(self, status: StatusMessage) -> None:
        job = status.job
        by = self._cancelled_by.get(job.id)
        if job.engine_url and job.engine_job_id:
            try:
                await self.bot.engine.cancel(job.engine_url, job.engine_job_id)
            except EngineError as exc:
                log.info("could not cancel engine job %s: %s", job.engine_job_id, exc.code)
        await self._finish(status, JobState.CANCELLED, render.cancelled_text(status.mention, job.id, by), error="cancelled")

    # -- helpers ---------------------------------------------------------------------------------------------

    def upload_budget(self, job: JobRecord) -> int:
        """Bytes the result may have: the channel's upload limit less room for the message around the file."""
        guild = self.bot.get_guild(job.guild_id) if job.guild_id else None
        limit = guild.filesize_limit if guild is not None else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
        return max(MIN_UPLOAD_BUDGET, limit - min(UPLOAD_MARGIN, limit // 10))

    async def _spec(self, job: JobRecord) -> JobSpec:
        inputs = await self.bot.journal.inputs(job.id)
        if inputs is None:
            raise EngineError(410, "inputs_gone", "its images are no longer stored. Please send them again.")
        content, style = inputs
        p = job.params
        return JobSpec(
            requester=str(job.user_id), content=content, content_name=job.content_name, style=style,
            style_name=job.style_name, preset=p.preset, size=p.size, steps=p.steps or self.bot.settings.job_steps,
            strength=render.STRENGTHS.get(p.strength, render.STRENGTHS[render.DEFAULT_STRENGTH]),
            preserve_colors=p.preserve_colors, seed=p.seed, byte_budget=self.upload_budget(job),
            key=f"{job.id}-{job.attempts}",
        )
