"""The scheduler: one running job per user, FIFO turns, per-user and per-guild limits, the cooldown.

A hand-driven clock stands in for time.monotonic, so the cooldown needs no sleeping.
"""
from __future__ import annotations

import asyncio

import pytest

from bot.errors import LimitReached
from bot.scheduler import Limits, Scheduler


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


NO_COOLDOWN = Limits(max_queued_per_user=2, user_cooldown_seconds=0.0, guild_queue_cap=10)


def test_a_users_jobs_take_turns_in_order_of_admission():
    s = Scheduler(Clock())
    for job in ("a", "b", "c"):
        s.admit(job, 1, 7, NO_COOLDOWN)
    s.admit("other", 2, 7, NO_COOLDOWN)
    assert [s.ahead_of(j) for j in ("a", "b", "c", "other")] == [0, 1, 2, 0]
    assert s.user_active(1) == 3 and s.user_active(2) == 1 and s.user_active(3) == 0
    assert s.guild_active(7) == 4 and s.guild_active(8) == 0 and len(s) == 4

    s.release("a")
    assert s.ahead_of("b") == 0 and s.ahead_of("c") == 1 and s.user_active(1) == 2 and len(s) == 3


def test_releasing_a_waiting_job_moves_the_later_ones_up_but_not_past_the_running_one():
    s = Scheduler(Clock())
    for job in ("a", "b", "c"):
        s.admit(job, 1, None, NO_COOLDOWN)
    s.release("b")  # cancelled while waiting
    assert s.ahead_of("a") == 0 and s.ahead_of("c") == 1


def test_release_of_the_last_job_forgets_the_user_and_unknown_ids_are_ignored():
    s = Scheduler(Clock())
    s.admit("a", 1, 7, NO_COOLDOWN)
    s.release("a")
    s.release("a")  # twice (the runner and a cancel button may both release)
    s.release("never-admitted")
    assert len(s) == 0 and s.user_active(1) == 0 and s.guild_active(7) == 0
    with pytest.raises(KeyError):
        s.ahead_of("a")


@pytest.mark.asyncio
async def test_wait_turn_returns_at_once_for_the_first_job_and_after_release_for_the_next():
    s = Scheduler(Clock())
    s.admit("a", 1, None, NO_COOLDOWN)
    s.admit("b", 1, None, NO_COOLDOWN)
    s.admit("c", 1, None, NO_COOLDOWN)
    await asyncio.wait_for(s.wait_turn("a"), 5)
    b = asyncio.create_task(s.wait_turn("b"))
    c = asyncio.create_task(s.wait_turn("c"))
    for _ in range(5):  # let both tasks run up to their wait
        await asyncio.sleep(0)
    assert not b.done() and not c.done()

    s.release("a")
    await asyncio.wait_for(b, 5)
    await asyncio.sleep(0)
    assert not c.done()  # still behind b
    s.release("b")
    await asyncio.wait_for(c, 5)


@pytest.mark.asyncio
async def test_other_users_are_never_held_up_by_a_busy_user():
    s = Scheduler(Clock())
    s.admit("a1", 1, 7, NO_COOLDOWN)
    s.admit("a2", 1, 7, NO_COOLDOWN)
    s.admit("b1", 2, 7, NO_COOLDOWN)
    await asyncio.wait_for(s.wait_turn("b1"), 5)


def test_per_user_limit_counts_the_running_job_plus_the_waiting_ones():
    s = Scheduler(Clock())
    limits = Limits(max_queued_per_user=2, user_cooldown_seconds=0.0, guild_queue_cap=10)
    for job in ("a", "b", "c"):  # one running + two waiting
        s.admit(job, 1, 7, limits)
    with pytest.raises(LimitReached) as err:
        s.admit("d", 1, 7, limits)
    assert err.value.message == ("You already have a job running and 2 waiting (the limit is 2). "
                                 "Wait for one to finish, or cancel one.")
    assert len(s) == 3 and s.user_active(1) == 3  # the refused job was not registered
    s.check(2, 7, limits)  # another user is not affected
    s.release("b")
    s.admit("d", 1, 7, limits)
    assert s.ahead_of("d") == 2


def test_a_limit_of_zero_waiting_means_one_job_at_a_time():
    s = Scheduler(Clock())
    limits = Limits(max_queued_per_user=0, user_cooldown_seconds=0.0, guild_queue_cap=10)
    s.admit("a", 1, None, limits)
    with pytest.raises(LimitReached, match=r"running and 0 waiting \(the limit is 0\)"):
        s.check(1, None, limits)


def test_the_exemption_skips_the_cooldown_but_not_the_queue_limits():
    s = Scheduler(Clock())
    limits = Limits(max_queued_per_user=0, user_cooldown_seconds=60.0, guild_queue_cap=10)
    s.admit("a", 1, 7, limits, exempt=True)
    with pytest.raises(LimitReached, match="running and 0 waiting"):
        s.admit("b", 1, 7, limits, exempt=True)


def test_guild_cap_counts_every_users_unfinished_jobs_in_that_guild_only():
    s = Scheduler(Clock())
    limits = Limits(max_queued_per_user=5, user_cooldown_seconds=0.0, guild_queue_cap=3)
    s.admit("a", 1, 7, limits)
    s.admit("b", 2, 7, limits)
    s.admit("c", 3, 7, limits)
    s.admit("elsewhere", 4, 8, limits)
    s.admit("dm", 4, None, limits)  # direct messages have no guild cap
    with pytest.raises(LimitReached) as err:
        s.check(5, 7, limits)
    assert err.value.message == "This server's queue is full (3 jobs). Please try again in a few minutes."
    s.check(5, 8, limits)
    s.check(5, None, limits)
    s.release("b")
    s.check(5, 7, limits)


def test_cooldown_counts_from_the_last_accepted_job_and_rounds_the_wait_up():
    clock = Clock(1000.0)
    s = Scheduler(clock)
    limits = Limits(max_queued_per_user=5, user_cooldown_seconds=10.0, guild_queue_cap=10)
    s.admit("a", 1, 7, limits)
    s.release("a")  # finishing the job does not end the cooldown

    clock.now = 1002.5  # 7.5 s left -> "8 s"
    with pytest.raises(LimitReached) as err:
        s.check(1, 7, limits)
    assert err.value.message == "Please wait 8 s before starting another job."
    clock.now = 1009.9  # 0.1 s left -> "1 s"
    with pytest.raises(LimitReached, match=r"^Please wait 1 s "):
        s.admit("b", 1, 7, limits)
    s.check(2, 7, limits)  # per user
    s.check(1, 7, limits, exempt=True)

    clock.now = 1010.0
    s.admit("b", 1, 7, limits)  # exactly over: allowed, and the cooldown starts again from here
    clock.now = 1015.0
    with pytest.raises(LimitReached, match="Please wait 5 s"):
        s.check(1, 7, limits)


def test_check_alone_does_not_start_the_cooldown_but_an_exempt_admission_does():
    clock = Clock()
    s = Scheduler(clock)
    limits = Limits(max_queued_per_user=5, user_cooldown_seconds=30.0, guild_queue_cap=10)
    s.check(1, 7, limits)
    s.check(1, 7, limits)
    s.admit("a", 1, 7, limits, exempt=True)
    with pytest.raises(LimitReached, match="Please wait 30 s"):
        s.check(1, 7, limits)


def test_restore_ignores_limits_and_cooldown_and_is_idempotent():
    clock = Clock()
    s = Scheduler(clock)
    strict = Limits(max_queued_per_user=0, user_cooldown_seconds=60.0, guild_queue_cap=1)
    for job in ("a", "b", "c"):  # the journal had three unfinished jobs of one user
        s.restore(job, 1, 7)
    s.restore("b", 1, 7)  # recovered twice: still one place
    assert len(s) == 3 and [s.ahead_of(j) for j in ("a", "b", "c")] == [0, 1, 2]
    s.release("a")
    s.release("b")
    s.release("c")
    s.check(1, 7, strict)  # restoring started no cooldown
