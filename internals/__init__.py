"""Every use of Tornado, asyncio and redis-py internals, in one place (README: Performance).

Each trick's module says what it saves (with the figure) and what it depends
on: `eventloop` (a READ interest dropped one callback late), `wire` (frames
built once, written with one `send`), `handshake` (what an open socket no
longer needs), `frame_loop` (a socket's messages run by its frame loop, no
task each, its frames cut from one read, no empty read before a wait),
`redis_lane` (a redis-py connection pipelined and read raw).
setup.cfg pins Tornado to the minor version they were tested on; `check()`
runs at a chat process's start and stops it with a clear message if an
internal it touches is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis._parsers.base
import redis.asyncio.connection
import tornado
import tornado.httputil
import tornado.iostream
import tornado.platform.asyncio
import tornado.web
import tornado.websocket

TESTED_TORNADO = "6.6"


def _assigns(function: Callable[..., Any], *names: str) -> list[str]:
    """Which of `names` the function does not set or read (by its bytecode's names)."""
    code_names = set(function.__code__.co_names)
    return [name for name in names if name not in code_names]


def missing() -> list[str]:
    """The internals chatfleet touches that this Tornado lacks."""
    gone: list[str] = []
    loop = tornado.platform.asyncio.BaseAsyncIOLoop
    gone += [f"BaseAsyncIOLoop.{n}" for n in
             _assigns(loop.initialize, "readers", "selector_loop", "asyncio_loop")]
    gone += [f"BaseAsyncIOLoop.{n}()" for n in ("split_fd", "update_handler", "remove_handler",
                                                "_handle_events")
             if not callable(getattr(loop, n, None))]
    stream = tornado.iostream.IOStream
    gone += [f"IOStream.{n}" for n in _assigns(stream.__init__, "socket")]
    gone += [f"BaseIOStream.{n}" for n in
             _assigns(tornado.iostream.BaseIOStream.__init__, "max_write_buffer_size")]
    gone += [f"IOStream.{n}()" for n in ("writing", "write", "closed", "_start_read",
                                         "_add_io_state")
             if not callable(getattr(stream, n, None))]
    gone += [f"BaseIOStream.{n}" for n in _assigns(
        tornado.iostream.BaseIOStream.read_bytes, "_read_bytes", "_read_partial")]
    gone += [f"BaseIOStream.{n}" for n in _assigns(
        tornado.iostream.BaseIOStream.__init__, "_read_buffer_size")]
    request = tornado.httputil.HTTPServerRequest
    gone += [f"HTTPServerRequest.{n}" for n in _assigns(
        request.__init__, "headers", "arguments", "query_arguments", "body_arguments",
        "connection")]
    cookies = getattr(request, "cookies", None)
    if not isinstance(cookies, property) or cookies.fget is None or _assigns(
            cookies.fget, "_cookies"):
        gone.append("HTTPServerRequest._cookies")
    gone += [f"RequestHandler.{n}" for n in
             _assigns(tornado.web.RequestHandler.clear, "_headers")]
    gone += [f"RequestHandler.{n}" for n in
             _assigns(tornado.web.RequestHandler.__init__, "ui")]
    # The frame loop (frame_loop): Tornado's frame state, its checks and its callbacks.
    protocol = tornado.websocket.WebSocketProtocol13
    gone += [f"WebSocketProtocol13.{n}()" for n in ("_run_callback", "_handle_message", "_abort",
                                                    "close", "_receive_frame_loop")
             if not callable(getattr(protocol, n, None))]
    gone += [f"WebSocketProtocol13.{n}" for n in _assigns(
        protocol.__init__, "_wire_bytes_in", "params", "_decompressor", "_frame_compressed",
        "_fragmented_message_buffer", "_fragmented_message_opcode")]
    gone += [f"WebSocketProtocol.{n}" for n in _assigns(
        tornado.websocket.WebSocketProtocol.__init__, "stream", "client_terminated")]
    gone += [f"tornado.websocket.{n}" for n in ("_websocket_mask", "_YIELD_THRESHOLD",
                                                "_FRAME_YIELD_COST")
             if not hasattr(tornado.websocket, n)]
    if not callable(getattr(tornado.websocket.WebSocketHandler, "get_websocket_protocol", None)):
        gone.append("WebSocketHandler.get_websocket_protocol()")
    # The Redis lane and the subscriber (redis_lane): a connection redis-py
    # opens and greets, then read and written here.
    connection = redis.asyncio.connection.AbstractConnection
    gone += [f"redis {n}()" for n, f in (
        ("AbstractConnection.connect", getattr(connection, "connect", None)),
        ("ConnectionPool.make_connection",
         getattr(redis.asyncio.connection.ConnectionPool, "make_connection", None)),
        ("BaseParser.parse_error", getattr(redis._parsers.base.BaseParser, "parse_error", None)),
    ) if not callable(f)]
    return gone


def check() -> None:
    """Stop the process, loudly, if an internal it relies on is missing."""
    gone = missing()
    if gone:
        raise SystemExit(
            f"chatfleet: Tornado {tornado.version} or redis-py lacks internals this build needs "
            f"(tested with {TESTED_TORNADO}.x): {', '.join(gone)}. Install the Tornado "
            "version setup.cfg pins, or update internals/ for this one.")
