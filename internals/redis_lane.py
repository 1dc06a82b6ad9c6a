"""One Redis connection that pipelines every call made in the same loop turn.

A chat publish through redis-py's asyncio client is a pool checkout and
return, a retry wrapper, a timeout scope, command packing in Python, and a
send and a read of its own. Here the calls made while the loop runs one turn
(the chat frames that one `epoll_wait` woke) are packed by hiredis, written
with one send, and their replies read and parsed together and matched to
the calls in order, as node-redis pipelines everything issued in one tick.

The connection itself is made by redis-py (so the URL's password, database,
TLS, and a Sentinel's current primary are honoured), then read and written
here directly. A lost connection fails the calls in flight with
`ConnectionError` and the next call makes a new one; a reply later than
`timeout` fails them all with `TimeoutError` and drops the connection.

Saves: the chat processes' CPU per message in small rooms (README:
Performance, small rooms and direct messages).
Depends on: `AbstractConnection.connect()`, `._reader` and `._writer` of
redis-py 8's asyncio connections; `hiredis.Reader` and `hiredis.pack_command`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Bytes asked of the socket per read; replies of many calls (or many pub/sub
# messages) arrive in one.
READ_CHUNK = 256 * 1024


def pack(*parts: Any) -> bytes:
    """One command in Redis's wire format."""
    packed: bytes = hiredis.pack_command(parts)
    return packed


async def open_raw(
    pool: ConnectionPool,
) -> tuple[AbstractConnection, asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection made and greeted by redis-py, to be read and written raw.

    Keep the connection object as long as its streams: redis-py closes the
    socket when it is collected.
    """
    connection = pool.make_connection()  # type: ignore[no-untyped-call]
    await connection.connect()
    reader, writer = connection._reader, connection._writer
    if reader is None or writer is None:
        raise RedisConnectionError("connection closed while opening")
    return connection, reader, writer


class _Wire:
    """One live connection: its writer, its parser and the calls awaiting replies."""

    def __init__(self, connection: AbstractConnection, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        # Held for its life: redis-py closes a connection's socket when the
        # connection object is collected.
        self.connection = connection
        self.reader = reader
        self.writer = writer
        self.parser = hiredis.Reader()
        self.outbox: list[bytes] = []
        # Each call's future and when it was written, oldest first.
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.failed: Exception | None = None
        self.task: asyncio.Task[None] | None = None

    def fail(self, error: Exception) -> None:
        """End the connection: every call in flight or unsent gets `error`."""
        if self.failed is None:
            self.failed = error
            self.writer.close()
            if self.task is not None and self.task is not asyncio.current_task():
                self.task.cancel()
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        self.outbox.clear()


class RedisLane:
    """Pipelined calls on one connection of `client`'s (its URL or Sentinel primary)."""

    def __init__(self, client: Redis, timeout: float) -> None:
        self._pool = client.connection_pool
        self._timeout = timeout
        self._wire: _Wire | None = None
        self._connecting: asyncio.Lock | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    async def call(self, *args: Any) -> Any:
        """Send one command; its reply (an error reply raised as redis-py's exception).

        A connection lost before the reply is retried once on a new one, as
        redis-py's client retries (publishes carry a cid against repeats).
        """
        try:
            return await self._call_once(args)
        except RedisConnectionError:
            return await self._call_once(args)

    async def _call_once(self, args: tuple[Any, ...]) -> Any:
        wire = self._wire
        if wire is None or wire.failed is not None:
            wire = await self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not wire.outbox:
            loop.call_soon(self._flush, wire)
        wire.outbox.append(pack(*args))
        wire.waiting.append((future, loop.time()))
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._timeout, self._check_late)
        reply = await future
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def _flush(self, wire: _Wire) -> None:
        if wire.failed is not None or not wire.outbox:
            return
        data = b"".join(wire.outbox)
        wire.outbox.clear()
        try:
            wire.writer.write(data)
        except (OSError, RuntimeError) as error:
            self._drop(wire, RedisConnectionError(f"write failed: {error}"))

    async def _connect(self) -> _Wire:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._wire is not None and self._wire.failed is None:
                return self._wire
            connection, reader, writer = await open_raw(self._pool)
            wire = _Wire(connection, reader, writer)
            wire.task = asyncio.create_task(self._read(wire), name="redis-lane")
            self._wire = wire
            return wire

    async def _read(self, wire: _Wire) -> None:
        try:
            while True:
                data = await wire.reader.read(READ_CHUNK)
                if not data:
                    raise RedisConnectionError("Redis closed the connection")
                wire.parser.feed(data)
                while (reply := wire.parser.gets()) is not False:
                    self._answer(wire, reply)
        except asyncio.CancelledError:
            wire.fail(RedisConnectionError("connection closed"))
            raise
        except (OSError, hiredis.ProtocolError) as error:
            self._drop(wire, RedisConnectionError(f"read failed: {error}"))
        except RedisConnectionError as error:
            self._drop(wire, error)

    def _answer(self, wire: _Wire, reply: Any) -> None:
        if not wire.waiting:
            raise RedisConnectionError("a reply nobody asked for")
        future, _ = wire.waiting.popleft()
        if isinstance(reply, hiredis.ReplyError):
            reply = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
        if not future.done():
            future.set_result(reply)
        if isinstance(reply, ReadOnlyError):
            # A Sentinel failover made this server a replica: the next call
            # connects to the new primary.
            self._drop(wire, RedisConnectionError("the server became a replica"))

    def _drop(self, wire: _Wire, error: Exception) -> None:
        if self._wire is wire:
            self._wire = None
        wire.fail(error)

    def _check_late(self) -> None:
        self._watchdog = None
        wire = self._wire
        if wire is None or not wire.waiting:
            return
        loop = asyncio.get_running_loop()
        oldest = wire.waiting[0][1]
        if loop.time() - oldest >= self._timeout:
            self._drop(wire, RedisTimeoutError("no reply from Redis in time"))
            return
        self._watchdog = loop.call_later(self._timeout - (loop.time() - oldest),
                                         self._check_late)

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.fail(RedisConnectionError("lane closed"))
            if wire.task is not None:
                await asyncio.gather(wire.task, return_exceptions=True)
