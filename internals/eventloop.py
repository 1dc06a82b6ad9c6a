"""Tornado's asyncio bridge, minus two epoll calls per WebSocket frame read.

A client frame (a pong, a chat frame) arrives whole, but Tornado's WebSocket
reads it in parts: `read_bytes(2)` for the header, then the mask and payload.
After the first part the stream holds unread bytes and no pending read, so
Tornado drops the socket's READ interest (`remove_reader`, an epoll_ctl), and
a moment later the next `read_bytes(2)` adds it back (another epoll_ctl, plus
asyncio's selector bookkeeping). With 10,000 idle sockets answering pings that
was a quarter of an idle process's CPU (py-spy).

Here a dropped READ interest is only noted, and carried out by a callback
queued right behind the one that wakes the stream's reader, unless that
reader asked for more in between (it almost always has). Nothing is
dispatched to the stream meanwhile: the next select's events queue behind
that callback, and asyncio cancels a queued event when its reader is removed.

Saves: idle CPU for 10,000 sockets 4.06% -> 3.32% of a core (README:
Performance); tests/test_eventloop.py counts 0 re-adds instead of 180.
Depends on: `BaseAsyncIOLoop.readers`, `.selector_loop`, `.asyncio_loop`,
`.split_fd`, `.update_handler`, `.remove_handler` (Tornado 6.6).
"""

from __future__ import annotations

import itertools
from typing import Any

from tornado.ioloop import IOLoop
from tornado.platform.asyncio import AsyncIOMainLoop


class DeferredReadRemovalLoop(AsyncIOMainLoop):
    """An AsyncIOMainLoop that drops a READ interest a moment late, if still unwanted."""

    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        # fd -> the mark of its latest dropped READ; only that mark's callback acts.
        self._unwanted_readers: dict[int, int] = {}
        self._marks = itertools.count()
        super().initialize(**kwargs)

    def update_handler(self, fd: Any, events: int) -> None:
        fd_number, _ = self.split_fd(fd)
        if events & IOLoop.READ:
            self._unwanted_readers.pop(fd_number, None)
        elif fd_number in self.readers:
            mark = self._unwanted_readers[fd_number] = next(self._marks)
            # Queued after this turn's wake-up of the stream's reader: many
            # streams' events are handled in one turn, each gets its own.
            self.asyncio_loop.call_soon(self._remove_if_unwanted, fd_number, mark)
            events |= IOLoop.READ  # still registered until then
        super().update_handler(fd, events)

    def remove_handler(self, fd: Any) -> None:
        self._unwanted_readers.pop(self.split_fd(fd)[0], None)
        super().remove_handler(fd)

    def _remove_if_unwanted(self, fd_number: int, mark: int) -> None:
        if self._unwanted_readers.get(fd_number) != mark:
            return  # wanted again, or dropped again later (a newer mark decides)
        del self._unwanted_readers[fd_number]
        if fd_number in self.readers:
            self.selector_loop.remove_reader(fd_number)
            self.readers.remove(fd_number)
