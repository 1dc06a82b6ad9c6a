"""Gap repair after a (re)subscription, beside live delivery, never in its way.

Redis pub/sub is at-most-once: whatever a room's channel carried while this
process was not subscribed is gone, so each confirmed (re)subscription is
followed by a read of the room's stream from where local sockets stopped.

The reads run as tasks of their own: the subscriber's one reader coroutine
goes on delivering every other room while they run (with thousands of rooms,
repairing them one round trip at a time inside the reader outlasted the
canary's deadline and set off another rebuild). A room's live chats that
arrive during its repair are held, then handed on after it, so the
receivers' id cursors never pass over the gap before the repair fills it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from pubsub.backoff import Backoff
from pubsub.codec import ZERO_ID, frame
from pubsub.fanout import Fanout
from pubsub.history import Gap, History

log = logging.getLogger(__name__)

# Live chats held per room while its repair runs; past this they are dropped
# and the repair reads them from the stream instead (every chat is stored).
HOLD_MAX = 1000
# A stop waits at most this long for cancelled repairs to end.
STOP_WAIT_SECONDS = 5.0
# Repairs reading at once: after a reconnect every room needs one, and they
# share the connection pool with live publishes, which must not wait behind
# thousands of them.
CONCURRENT_REPAIRS = 16

Payload = dict[str, Any]


@dataclass
class _RoomRepair:
    held: list[Payload] = field(default_factory=list)
    # Another resubscription, or dropped live chats: read the stream once more.
    again: bool = False


class Repairs:
    """Per-room repairs of one process; `deliver` hands a payload to the room's members."""

    def __init__(self, history: History, fanout: Fanout, on_error: Callable[[], None],
                 unrepairable: Callable[[str, Gap], str | None] = lambda room, gap: None
                 ) -> None:
        """`unrepairable(room, gap)`: why the gap cannot be filled ("trimmed",
        "lost") or None; then the room's sockets get `reset` and the recent
        messages instead of a silent hole."""
        self.history = history
        self.fanout = fanout
        self.on_error = on_error
        self.unrepairable = unrepairable
        self._rooms: dict[str, _RoomRepair] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._readers = asyncio.Semaphore(CONCURRENT_REPAIRS)
        self._stopped = False

    def start(self, room: str) -> None:
        """The room's channel was (re)subscribed: repair it, holding its live chats."""
        running = self._rooms.get(room)
        if running is not None:
            running.again = True
            return
        repair = self._rooms[room] = _RoomRepair()
        task = asyncio.get_running_loop().create_task(self._run(room, repair), name="repair")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def hold(self, room: str, payload: Payload) -> bool:
        """Keep a live chat of a room under repair; False if the room is not under repair."""
        repair = self._rooms.get(room)
        if repair is None:
            return False
        if len(repair.held) < HOLD_MAX:
            repair.held.append(payload)
        else:
            repair.again = True
        return True

    def running(self) -> int:
        return len(self._rooms)

    async def stop(self, timeout: float = STOP_WAIT_SECONDS) -> None:
        """Cancel every repair; wait for them at most `timeout` (a stop must end)."""
        self._stopped = True  # also ends a loop whose cancellation got lost in a race
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(set(self._tasks), timeout=timeout)
            if stuck:
                log.error("%d repairs did not stop within %.0fs", len(stuck), timeout)

    async def _run(self, room: str, repair: _RoomRepair) -> None:
        backoff = Backoff()
        try:
            while not self._stopped:
                repair.again = False
                try:
                    async with self._readers:
                        await self._read(room)
                except (RedisError, OSError) as error:
                    # Keep holding: handing the held chats on now would move
                    # the cursors past the gap for good.
                    self.on_error()
                    log.warning("repair of a room failed (%s): retrying", type(error).__name__)
                    repair.again = True
                    await backoff.wait()
                if not repair.again:
                    return
                if len(repair.held) >= HOLD_MAX:
                    repair.held.clear()  # the next read brings them from the stream
        finally:
            del self._rooms[room]
            for payload in repair.held:
                self.fanout.deliver(room, payload)

    async def _read(self, room: str) -> None:
        start = self.fanout.oldest_cursor(room)
        if start is None:
            return
        gap = await self.history.gap(room, start)
        reason = self.unrepairable(room, gap)
        if reason is not None:
            await self._reset(room, reason, gap.epoch)
            return
        async for page in self.history.after(room, start):
            members = self.fanout.rooms.get(room)
            if not members:
                return
            for entry in page:
                self.fanout.deliver_chat(members, entry.key, entry.frame)

    async def _reset(self, room: str, reason: str, epoch: str) -> None:
        """The gap cannot be filled: say so to the room's live sockets, then give
        them the recent messages, as a join without `after` would."""
        recent = await self.history.recent(room)
        members = self.fanout.rooms.get(room)
        if not members:
            return
        notice = frame("reset", room=room, reason=reason, epoch=epoch)
        log.warning("room could not be repaired (%s): reset sent", reason)
        for member, cursor in list(members.items()):
            if cursor.pending is None:  # a socket still joining reads for itself
                member.send_frame(notice)
                cursor.last = ZERO_ID
        for entry in recent:
            self.fanout.deliver_chat(members, entry.key, entry.frame)
