"""Keep-alive for every socket of a process, from one timer.

Keep-alives keep idle NATs and proxies from dropping the tunnel, and pings
find dead peers (a laptop closed mid-chat). Tornado's own pings run a
coroutine per connection that wakes twice per interval; with thousands of
idle sockets those wake-ups and their tasks were most of an idle process's
CPU and a tenth of its memory per socket. Here one loop walks a queue
ordered by due time: each tick sends a keep-alive to the sockets that are due.

Most keep-alives are one-way heartbeats, an unsolicited empty pong (RFC 6455
5.5.3: no answer is expected; browsers ignore it). Traffic one way is enough
for the idle timers of proxies, and costs one `send` here and one forward in
HAProxy. A pong to read is most of a round trip's cost, so only every
`ping_every`-th keep-alive is a ping the peer must answer: a socket that has
answered none of its last two pings (nor sent anything) is closed, so a slow
peer is not cut off for one late pong. A peer that vanished is found sooner
by HAProxy's kernel, which gives up on a heartbeat left unacknowledged
(`tcp-ut` in haproxy.cfg).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

# An empty ping frame, server to client (unmasked): FIN + opcode 0x9, length 0.
PING_FRAME = b"\x89\x00"
# An empty unsolicited pong (opcode 0xA): a heartbeat nobody answers.
HEARTBEAT_FRAME = b"\x8a\x00"
TICK_SECONDS = 1.0
PINGS_UNANSWERED_BEFORE_CLOSE = 2


class KeptAlive(Protocol):
    def keepalive_due(self, ping: bool) -> bool:
        """Send a ping (must be answered) if `ping`, else a heartbeat; False if the
        socket is gone, or was closed for two unanswered pings."""


class KeepAlive:
    """Sends each added socket a keep-alive every `interval` seconds; every
    `ping_every`-th is a ping (1: every one)."""

    def __init__(self, interval: float, ping_every: int = 1) -> None:
        self.interval = interval
        self.ping_every = max(1, ping_every)
        # (due time, how many keep-alives this one makes, socket)
        self._due: deque[tuple[float, int, KeptAlive]] = deque()

    def add(self, socket: KeptAlive) -> None:
        # Sockets join at the back with the latest due time: the queue stays ordered.
        self._due.append((asyncio.get_running_loop().time() + self.interval, 1, socket))

    def tick(self, now: float) -> None:
        due, every = self._due, self.ping_every
        while due and due[0][0] <= now:
            _, beat, socket = due.popleft()
            if socket.keepalive_due(beat % every == 0):
                due.append((now + self.interval, beat + 1, socket))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.tick(loop.time())
