"""A bounded job queue that is fair across requesters (pure asyncio, no torch, no HTTP).

Each requester has a lane (FIFO of their jobs). This is start-time fair queuing with one job as the
unit of work: every lane carries the "tag" of its next job; the lane with the lowest tag goes next (ties:
the requester served longest ago, never-served first) and its tag goes up by one. A lane that opens starts
at the tag of the job most recently started (the virtual time), or at its requester's own next tag if that
is later. So a newcomer waits for at most one job of everyone else however many jobs a heavy user has
queued, a requester who was just served goes behind those who were not, and a stream of light users
cannot starve a heavy one either.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

# How many requesters' last tags to remember; a forgotten one restarts at the virtual time (one extra turn
# at most).
_MEMORY = 10_000


class QueueError(Exception):
    pass


class QueueFull(QueueError):
    """The whole queue is at capacity."""


class RequesterLimit(QueueError):
    """This requester already has the maximum number of queued jobs."""


class QueueClosed(QueueError):
    """The engine is shutting down and takes no new jobs."""


@dataclass
class _Lane(Generic[T]):
    requester: str
    items: deque[T] = field(default_factory=deque)
    tag: int = 0
    """Start tag of the lane's next job."""
    last_served: int = -1
    """Tick of the requester's last start (-1: never), for ties."""


class FairQueue(Generic[T]):
    def __init__(
        self,
        maxsize: int,
        per_requester: int,
        *,
        requester_of: Callable[[T], str],
        on_reorder: Callable[[list[T]], None] | None = None,
    ) -> None:
        self.maxsize = maxsize
        self.per_requester = per_requester
        self._requester_of = requester_of
        self._on_reorder = on_reorder
        self._lanes: dict[str, _Lane[T]] = {}
        self._history: OrderedDict[str, tuple[int, int]] = OrderedDict()
        """requester -> (next tag, tick of the last start), for requesters whose lane has closed."""
        self._vtime = 0
        self._tick = itertools.count()
        self._size = 0
        self._closed = False
        self._not_empty = asyncio.Event()

    def __len__(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def queued_for(self, requester: str) -> int:
        lane = self._lanes.get(requester)
        return len(lane.items) if lane else 0

    def check(self, requester: str) -> None:
        """Raise the error `put` would raise for this requester now, without queueing anything."""
        if self._closed:
            raise QueueClosed("the engine is shutting down")
        if self._size >= self.maxsize:
            raise QueueFull(f"the queue is full ({self.maxsize} jobs)")
        if self.queued_for(requester) >= self.per_requester:
            raise RequesterLimit(f"at most {self.per_requester} queued jobs per requester")

    def put(self, item: T) -> int:
        """Queue `item`; returns its 1-based position. Raises QueueClosed, QueueFull or RequesterLimit."""
        requester = self._requester_of(item)
        self.check(requester)
        lane = self._lanes.get(requester)
        if lane is None:
            next_tag, last_served = self._history.get(requester, (0, -1))
            lane = _Lane(requester, tag=max(self._vtime, next_tag), last_served=last_served)
            self._lanes[requester] = lane
        lane.items.append(item)
        self._size += 1
        self._not_empty.set()
        order = self._reorder()
        return order.index(item) + 1

    async def get(self) -> T:
        """Wait for and remove the next item in fair order."""
        while not self._size:
            self._not_empty.clear()
            await self._not_empty.wait()
        lane = min(self._lanes.values(), key=self._lane_key)
        item = lane.items.popleft()
        self._size -= 1
        self._vtime = lane.tag
        lane.tag += 1
        lane.last_served = next(self._tick)
        if not lane.items:
            self._close_lane(lane)
        self._reorder()
        return item

    def remove(self, item: T) -> bool:
        """Take a queued item out (cancel); False if it is not queued."""
        lane = self._lanes.get(self._requester_of(item))
        if lane is None or item not in lane.items:
            return False
        lane.items.remove(item)
        self._size -= 1
        if not lane.items:
            self._close_lane(lane)
        self._reorder()
        return True

    def close(self) -> list[T]:
        """Refuse new items from now on; returns (and removes) everything still queued."""
        self._closed = True
        left = self.order()
        self._lanes.clear()
        self._history.clear()
        self._size = 0
        return left

    def order(self) -> list[T]:
        """Everything queued, in the order `get` will return it."""
        heap = [(lane.tag, lane.last_served, i, lane.requester) for i, lane in enumerate(self._lanes.values())]
        heapq.heapify(heap)
        taken = {r: 0 for r in self._lanes}
        out: list[T] = []
        tick = next(self._tick)  # a simulated "served now" mark, later than every real one
        while heap:
            tag, _, i, requester = heapq.heappop(heap)
            lane = self._lanes[requester]
            out.append(lane.items[taken[requester]])
            taken[requester] += 1
            if taken[requester] < len(lane.items):
                tick += 1
                heapq.heappush(heap, (tag + 1, tick, i, requester))
        return out

    def _close_lane(self, lane: _Lane[T]) -> None:
        del self._lanes[lane.requester]
        self._history[lane.requester] = (lane.tag, lane.last_served)
        self._history.move_to_end(lane.requester)
        while len(self._history) > _MEMORY:
            self._history.popitem(last=False)

    @staticmethod
    def _lane_key(lane: _Lane[T]) -> tuple[int, int]:
        return lane.tag, lane.last_served

    def _reorder(self) -> list[T]:
        order = self.order()
        if self._on_reorder is not None:
            self._on_reorder(order)
        return order
