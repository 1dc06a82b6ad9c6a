"""Tornado's asyncio bridge, minus the epoll calls of a READ interest dropped for a moment.

Tornado drops a socket's READ interest whenever nobody is reading it: between
the parts of a WebSocket frame (`read_bytes(2)` for the header, then the
mask and payload), and while `on_message` awaits something, such as a chat's
Redis round trip. A moment later the next read adds it back. Each drop and
re-add is an `epoll_ctl` plus asyncio's selector bookkeeping and a new
handle: a quarter of an idle process's CPU with 10,000 sockets answering
pings, and a tenth of a chat process's in small rooms (py-spy).

Here a dropped READ interest is only noted. If the socket turns readable
while nobody reads it, the interest is removed then, and nothing is read:
the bytes wait in the kernel, so a peer that keeps sending while its last
frame is handled is held back exactly as by Tornado (backpressure). A reader
that asks again before that costs nothing, and that is almost always.

Saves: idle CPU for 10,000 sockets 4.06% -> 3.32% of a core, and the
remove/re-add pair of every chat frame (README: Performance);
tests/test_eventloop.py counts the registrations.
Depends on: `BaseAsyncIOLoop.readers`, `.selector_loop`, `.split_fd`,
`.update_handler`, `.remove_handler`, `._handle_events` (Tornado 6.6).
"""

from __future__ import annotations

from typing import Any

from tornado.ioloop import IOLoop
from tornado.platform.asyncio import AsyncIOMainLoop


class DeferredReadRemovalLoop(AsyncIOMainLoop):
    """An AsyncIOMainLoop that drops a READ interest only when it fires unwanted."""

    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        # Registered for READ while no stream reads them.
        self._unwanted_readers: set[int] = set()
        super().initialize(**kwargs)

    def update_handler(self, fd: Any, events: int) -> None:
        fd_number, _ = self.split_fd(fd)
        if events & IOLoop.READ:
            self._unwanted_readers.discard(fd_number)
        elif fd_number in self.readers:
            self._unwanted_readers.add(fd_number)
            events |= IOLoop.READ  # stays registered until it fires
        super().update_handler(fd, events)

    def remove_handler(self, fd: Any) -> None:
        self._unwanted_readers.discard(self.split_fd(fd)[0])
        super().remove_handler(fd)

    def _handle_events(self, fd: int, events: int) -> None:
        if events & IOLoop.READ and fd in self._unwanted_readers:
            # Readable, and nobody reads: stop watching; the bytes stay in the kernel.
            self._unwanted_readers.discard(fd)
            self.selector_loop.remove_reader(fd)
            self.readers.discard(fd)
            return
        super()._handle_events(fd, events)
