"""Tornado's WebSocket frame loop, minus a task per message and a coroutine per read.

For every text frame Tornado's protocol wraps the handler's `on_message`
coroutine in a Task, adds a done-callback that resolves a second Future,
and its frame loop awaits that Future: two extra loop turns and four objects
per message. Each of the three reads of a frame (header, mask, payload) also
goes through a small coroutine around `IOStream.read_bytes`.

Here the frame loop awaits `on_message` itself, inside a guard that logs an
exception and aborts the connection as Tornado does, and a read is the
stream's own Future. Messages of one socket are still handled one at a time,
in order: the loop reads the next frame only once the last one's handler
returns. Cancellation is not caught: it belongs to the frame loop itself.

Saves: the Task and the Future per message (`_ensure_future` was 3.8% of a
chat process in small rooms, py-spy; README: Performance).
Depends on: `WebSocketProtocol13._run_callback`, `._read_bytes`, `._abort`,
`.stream`, `._wire_bytes_in` and `WebSocketHandler.get_websocket_protocol`
(Tornado 6.6).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tornado.websocket import WebSocketProtocol, WebSocketProtocol13


class DirectFrameProtocol(WebSocketProtocol13):
    """WebSocketProtocol13 whose frame loop runs the handler's coroutines itself."""

    def _read_bytes(self, n: int) -> Awaitable[bytes]:  # type: ignore[override]
        # The stream's Future, awaited by the caller: no coroutine around it.
        # The count only paces the loop's yields (Tornado's _YIELD_THRESHOLD).
        self._wire_bytes_in += n
        assert self.stream is not None
        return self.stream.read_bytes(n)

    def _run_callback(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, **kwargs: Any,
    ) -> Coroutine[Any, Any, None] | None:
        try:
            result = callback(*args, **kwargs)
        except Exception:
            self.handler.log_exception(*sys.exc_info())
            self._abort()
            return None
        if result is None:
            return None
        return self._guarded(result)

    async def _guarded(self, result: Awaitable[Any]) -> None:
        try:
            await result
        except Exception:
            self.handler.log_exception(*sys.exc_info())
            self._abort()


def with_direct_frames(protocol: WebSocketProtocol | None) -> WebSocketProtocol | None:
    """The protocol Tornado's `get_websocket_protocol` made, running its frames directly.

    Its class is swapped rather than a new one built, so Tornado keeps
    choosing the version and building the parameters.
    """
    if type(protocol) is WebSocketProtocol13:
        protocol.__class__ = DirectFrameProtocol
    return protocol
