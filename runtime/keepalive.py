"""Keep-alive pings for every socket of a process, from one timer.

Pings find dead peers (a laptop closed mid-chat) and keep idle NATs and
proxies from dropping the tunnel. Tornado's own pings run a coroutine per
connection that wakes twice per interval; with thousands of idle sockets
those wake-ups and their tasks were most of an idle process's CPU and a
tenth of its memory per socket. Here one loop walks a queue ordered by due
time: each tick pings the sockets that are due, and a socket that has
answered none of its last two pings (nor sent anything) is closed: a dead
peer goes within three intervals, a slow one is not cut off for one late pong.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

# An empty ping frame, server to client (unmasked): FIN + opcode 0x9, length 0.
PING_FRAME = b"\x89\x00"
TICK_SECONDS = 1.0
PINGS_UNANSWERED_BEFORE_CLOSE = 2


class Pingable(Protocol):
    def ping_due(self) -> bool:
        """Ping now; False if the socket is gone, or was closed for two unanswered pings."""


class KeepAlive:
    """Pings each added socket every `interval` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._due: deque[tuple[float, Pingable]] = deque()

    def add(self, socket: Pingable) -> None:
        # Sockets join at the back with the latest due time: the queue stays ordered.
        self._due.append((asyncio.get_running_loop().time() + self.interval, socket))

    def tick(self, now: float) -> None:
        due = self._due
        while due and due[0][0] <= now:
            _, socket = due.popleft()
            if socket.ping_due():
                due.append((now + self.interval, socket))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.tick(loop.time())
