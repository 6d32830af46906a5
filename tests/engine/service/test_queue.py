"""nst_engine.service.queue.FairQueue on its own: order, caps, positions (no HTTP, no torch)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from nst_engine.service.queue import FairQueue, QueueClosed, QueueFull, RequesterLimit


@dataclass(eq=False)
class Item:
    requester: str
    n: int

    def __repr__(self) -> str:
        return f"{self.requester}{self.n}"


def _queue(maxsize=100, per=100, seen=None) -> FairQueue[Item]:
    return FairQueue(maxsize, per, requester_of=lambda i: i.requester,
                     on_reorder=(lambda order: seen.append([repr(i) for i in order])) if seen is not None else None)


async def _drain(q: FairQueue[Item]) -> list[str]:
    return [repr(await q.get()) for _ in range(len(q))]


@pytest.mark.asyncio
async def test_round_robin_not_fifo():
    q = _queue()
    for n in range(4):
        q.put(Item("a", n))
    q.put(Item("b", 0))
    q.put(Item("c", 0))
    q.put(Item("b", 1))
    expected = ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]
    assert [repr(i) for i in q.order()] == expected
    assert await _drain(q) == expected


@pytest.mark.asyncio
async def test_order_predicts_get_while_jobs_arrive():
    q = _queue()
    for n in range(3):
        q.put(Item("a", n))
    assert repr(await q.get()) == "a0"  # a0 runs; a newcomer goes before a's next job
    q.put(Item("b", 0))
    assert [repr(i) for i in q.order()] == ["b0", "a1", "a2"]
    assert repr(await q.get()) == "b0"
    q.put(Item("b", 1))  # b was just served: a goes first now
    predicted = [repr(i) for i in q.order()]
    assert predicted == ["a1", "b1", "a2"]
    assert await _drain(q) == predicted


@pytest.mark.asyncio
async def test_heavy_user_is_not_starved_by_a_stream_of_light_users():
    q = _queue()
    for n in range(3):
        q.put(Item("heavy", n))
    served = []
    for n in range(6):
        q.put(Item(f"light{n % 2}", n))  # light users keep arriving, one job at a time
        served.append(repr(await q.get()))
    assert sum(s.startswith("heavy") for s in served) >= 2, served


@pytest.mark.asyncio
async def test_caps_and_close():
    q = _queue(maxsize=3, per=2)
    q.put(Item("a", 0))
    q.put(Item("a", 1))
    with pytest.raises(RequesterLimit):
        q.put(Item("a", 2))
    q.put(Item("b", 0))
    with pytest.raises(QueueFull):
        q.put(Item("c", 0))
    assert q.remove(q.order()[0]) and not q.remove(Item("z", 0))
    left = q.close()
    assert [repr(i) for i in left] == ["a1", "b0"] and len(q) == 0
    with pytest.raises(QueueClosed):
        q.put(Item("c", 0))


@pytest.mark.asyncio
async def test_get_waits_and_positions_are_published():
    seen: list[list[str]] = []
    q = _queue(seen=seen)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    assert q.put(Item("a", 0)) == 1
    assert repr(await getter) == "a0"
    assert seen[-1] == []
    q.put(Item("a", 1))
    q.put(Item("b", 0))
    assert seen[-1] == ["b0", "a1"]  # a was just served
