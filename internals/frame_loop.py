"""Tornado's WebSocket frame loop, minus a task per message and three reads per frame.

For every text frame Tornado's protocol wraps the handler's `on_message`
coroutine in a Task, adds a done-callback that resolves a second Future,
and its frame loop awaits that Future: two extra loop turns and four objects
per message. Each of the three reads of a frame (header, mask, payload) also
goes through a small coroutine around `IOStream.read_bytes`.

Here the frame loop awaits `on_message` itself, inside a guard that logs an
exception and aborts the connection as Tornado does. Messages of one socket
are still handled one at a time, in order: the loop takes the next frame
only once the last one's handler returns. Cancellation is not caught: it
belongs to the frame loop itself.

Tornado also reads each frame in three awaited reads of the stream (header,
mask, payload), some fifty Python calls per frame. Here one read takes
whatever the stream has (a whole frame, usually, or several), and the
frames in it are cut out of those bytes; a frame split over reads waits for
the rest. The checks are Tornado's, in its order: reserved bits, a control
frame's size and fragmentation, the message size (refused from the header,
before its payload is read), continuation frames. Once this side has sent
its close, the peer's messages are no longer handed to the handler (nothing
could answer them); its close frame still is.

After a short read (less than asked: the socket was emptied) the next read
waits for epoll before it reads. Tornado would first try to read at once,
and on a chat socket that `recv` almost always finds nothing (EAGAIN, and
a caught exception). epoll is level-triggered: data that arrived meanwhile
is reported by the next poll, so nothing waits longer than one loop turn.

Saves: the Task and the Future per message (`_ensure_future` was 3.8% of a
chat process in small rooms, py-spy), two reads of every frame, and the
empty `recv` before each wait (README: Performance).
Depends on: `IOStream._start_read`, `._add_io_state`, `._read_bytes`,
`._read_partial`, `._read_buffer_size`, `WebSocketProtocol13._run_callback`,
`._handle_message`, `._abort`, `.close`, `.stream`, `.params`, `.client_terminated`,
`._wire_bytes_in`, `._decompressor`, `._frame_compressed`,
`._fragmented_message_buffer`, `._fragmented_message_opcode`, the module's
`_websocket_mask`, `_YIELD_THRESHOLD`, `_FRAME_YIELD_COST` and
`WebSocketHandler.get_websocket_protocol` (Tornado 6.6).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import tornado.websocket
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketProtocol, WebSocketProtocol13

# Tornado's private pieces, read without failing the import: a Tornado that
# lacks one is stopped at start, with a clear message (internals.check()).
# Its unmasking (a C speedup when built) and its loop's fairness: a socket
# flooding small frames yields to the others every so many bytes.
_websocket_mask = cast(Callable[[bytes, bytes], bytes],
                       getattr(tornado.websocket, "_websocket_mask", None))
_YIELD_THRESHOLD: int = getattr(tornado.websocket, "_YIELD_THRESHOLD", 0)
_FRAME_YIELD_COST: int = getattr(tornado.websocket, "_FRAME_YIELD_COST", 0)

# One read takes at most this much of what the stream holds.
READ_CHUNK = 64 * 1024
# What `_next_frame` says when the connection was refused (it is closing).
STOP = "stop"


def read_when_readable(stream: IOStream, limit: int) -> Awaitable[bytes]:
    """`stream.read_bytes(limit, partial=True)`, but with nothing buffered it
    waits for epoll to say the socket is readable before the first `recv`."""
    if type(stream) is not IOStream or stream._read_buffer_size or stream.closed():
        # TLS holds decrypted bytes epoll cannot see; buffered bytes or a
        # closed stream: Tornado's own path answers at once.
        return stream.read_bytes(limit, partial=True)
    future: Awaitable[bytes] = stream._start_read()
    stream._read_bytes = limit
    stream._read_partial = True
    stream._add_io_state(IOLoop.READ)
    return future


class DirectFrameProtocol(WebSocketProtocol13):
    """WebSocketProtocol13 whose frame loop reads frames in bulk and runs the
    handler's coroutines itself."""

    async def _receive_frame_loop(self) -> None:
        try:
            await self._receive_frames()
        except StreamClosedError:
            self._abort()
        finally:
            self.handler.on_ws_connection_close(self.close_code, self.close_reason)

    async def _receive_frames(self) -> None:
        stream = self.stream
        assert stream is not None
        data, pos = b"", 0
        work = 0  # bytes and frames since the last yield (Tornado's _YIELD_THRESHOLD)
        emptied = False  # the last read took less than asked: the socket had no more
        while not self.client_terminated:
            frame = self._next_frame(data, pos)
            if frame is None:  # not all of it here yet
                chunk = await (read_when_readable(stream, READ_CHUNK) if emptied
                               else stream.read_bytes(READ_CHUNK, partial=True))
                emptied = len(chunk) < READ_CHUNK
                self._wire_bytes_in += len(chunk)
                data, pos = (data[pos:] + chunk if pos < len(data) else chunk), 0
                continue
            if isinstance(frame, str):  # STOP
                return
            end, final, opcode, payload = frame
            work += _FRAME_YIELD_COST + end - pos
            pos = end
            handled = self._take_frame(final, opcode, payload)
            if handled is not None:
                await handled
            if work >= _YIELD_THRESHOLD:
                work = 0
                await asyncio.sleep(0)

    def _next_frame(self, data: bytes, pos: int) -> tuple[int, int, int, bytes] | str | None:
        """The frame at `data[pos:]`: (its end, FIN, opcode, unmasked payload);
        None until all of it is there; STOP if it was refused."""
        have = len(data) - pos
        if have < 2:
            return None
        header, length = data[pos], data[pos + 1]
        final, reserved = header & self.FIN, header & self.RSV_MASK
        opcode = header & self.OPCODE_MASK
        if self._decompressor is not None and opcode != 0:
            # The first frame of a message says whether it is compressed.
            self._frame_compressed = bool(reserved & self.RSV1)
            reserved &= ~self.RSV1
        if reserved:
            self._abort()  # an extension nobody agreed on
            return STOP
        masked, length = length & 0x80, length & 0x7F
        start = pos + 2
        if opcode & 0x8 and length >= 126:
            self._abort()  # a control frame's payload is under 126 bytes
            return STOP
        if length == 126:
            if have < 4:
                return None
            length, start = int.from_bytes(data[start:start + 2], "big"), start + 2
        elif length == 127:
            if have < 10:
                return None
            length, start = int.from_bytes(data[start:start + 8], "big"), start + 8
        fragments = self._fragmented_message_buffer
        if length + (len(fragments) if fragments is not None else 0) \
                > self.params.max_message_size:
            self.close(1009, "message too big")
            self._abort()
            return STOP
        end = start + (4 if masked else 0) + length
        if end > len(data):
            return None
        if not masked:
            return end, final, opcode, data[start:end]
        return end, final, opcode, _websocket_mask(data[start:start + 4], data[start + 4:end])

    def _take_frame(self, final: int, opcode: int, payload: bytes) -> Awaitable[None] | None:
        """Tornado's rules for a whole frame; the handler's awaitable for a whole message."""
        if self.server_terminated and not opcode & 0x8:
            # This side is closing: only the peer's close (and pings) matter now.
            # Its messages would be answered by no one; skipped, a flood that
            # goes on until its close costs only the cutting.
            return None
        if opcode & 0x8:
            # Control frames may come between the fragments of a message, and
            # are never fragmented themselves.
            if not final:
                self._abort()
                return None
        elif opcode == 0:  # a continuation
            fragments = self._fragmented_message_buffer
            if fragments is None:
                self._abort()  # nothing to continue
                return None
            fragments.extend(payload)
            if not final:
                return None
            opcode, payload = self._fragmented_message_opcode or 0, bytes(fragments)
            self._fragmented_message_buffer = None
        else:  # the first frame of a message
            if self._fragmented_message_buffer is not None:
                self._abort()  # the last message is not finished
                return None
            if not final:
                self._fragmented_message_opcode = opcode  # type: ignore[assignment]
                self._fragmented_message_buffer = bytearray(payload)
                return None
        return self._handle_message(opcode, payload)

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
