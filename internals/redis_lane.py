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

`call_many` sends a batch the same way: the periodic session check asks
about every login of the process in batches of 500.

Saves: the chat processes' CPU per message in small rooms (README:
Performance, small rooms and direct messages); the session check's CPU per
login, 52.8 -> 6.7 µs against redis-py's pipeline.
Depends on: `AbstractConnection.connect()`, `._reader` and `._writer` of
redis-py 8's asyncio connections; `hiredis.Reader` and `hiredis.pack_command`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def pack(*parts: Any) -> bytes:
    """One command in Redis's wire format."""
    packed: bytes = hiredis.pack_command(parts)
    return packed


class RawReplies(asyncio.Protocol):
    """Reads a connection in place of redis-py: each read parsed by hiredis, and
    every complete reply handed to `on_reply` right then, with no task or
    stream in between. A reply `on_reply` cannot take (it raises) ends the
    connection; `on_lost(error)` hears of every end, once."""

    def __init__(self, on_reply: Callable[[Any], None],
                 on_lost: Callable[[Exception], None]) -> None:
        self.on_reply = on_reply
        self.on_lost = on_lost
        self.parser = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.error: Exception | None = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
            while (reply := self.parser.gets()) is not False:
                self.on_reply(reply)
        except (RedisError, hiredis.ProtocolError) as error:
            self.error = error if isinstance(error, RedisError) else RedisConnectionError(
                f"unreadable reply: {error}")
            if self.transport is not None:
                self.transport.abort()

    def eof_received(self) -> bool:
        return False  # close: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(self.error or RedisConnectionError(
            f"connection lost: {exc}" if exc else "Redis closed the connection"))


async def open_raw(
    pool: ConnectionPool, protocol: RawReplies,
) -> tuple[AbstractConnection, asyncio.Transport]:
    """A connection made and greeted by redis-py, then read by `protocol` and
    written through the transport returned.

    Keep the connection object as long as the transport: redis-py closes the
    socket when it is collected.
    """
    connection = pool.make_connection()  # type: ignore[no-untyped-call]
    await connection.connect()
    writer = connection._writer
    if writer is None or writer.transport.is_closing():
        raise RedisConnectionError("connection closed while opening")
    transport = writer.transport
    protocol.transport = transport
    transport.set_protocol(protocol)
    return connection, transport


class _Wire:
    """One live connection: its transport, and the calls awaiting replies."""

    def __init__(self) -> None:
        self.connection: AbstractConnection | None = None
        self.transport: asyncio.Transport | None = None
        self.outbox: list[bytes] = []
        # Each call's future and when it was written, oldest first.
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.failed: Exception | None = None

    def fail(self, error: Exception) -> None:
        """End the connection: every call in flight or unsent gets `error`."""
        if self.failed is None:
            self.failed = error
            if self.transport is not None:
                self.transport.close()
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
        self._connecting = asyncio.Lock()  # one connect at a time (binds no loop until used)
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

    async def call_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send `commands` in one write; their replies, in order. An error reply
        stands in its command's place as redis-py's exception, not raised.

        Retried once on a new connection, like `call`: for commands that may
        run twice (reads, expiries).
        """
        try:
            return await self._call_many_once(commands)
        except RedisConnectionError:
            return await self._call_many_once(commands)

    async def _call_once(self, args: tuple[Any, ...]) -> Any:
        (future,) = await self._send((args,))
        reply = await future
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def _call_many_once(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        if not commands:
            return []
        futures = await self._send(commands)
        await futures[-1]  # replies come in order: the last answered, all are
        return [future.result() for future in futures]

    async def _send(self, commands: Sequence[tuple[Any, ...]]) -> list[asyncio.Future[Any]]:
        """Queue `commands` for this loop turn's write; a future per reply."""
        wire = self._wire
        if wire is None or wire.failed is not None:
            wire = await self._connect()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in commands]
        if not wire.outbox:
            loop.call_soon(self._flush, wire)
        wire.outbox.extend(pack(*args) for args in commands)
        now = loop.time()
        wire.waiting.extend((future, now) for future in futures)
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._timeout, self._check_late)
        return futures

    def _flush(self, wire: _Wire) -> None:
        if wire.failed is not None or not wire.outbox:
            return
        data = b"".join(wire.outbox)
        wire.outbox.clear()
        assert wire.transport is not None
        wire.transport.write(data)  # a failed write ends in connection_lost

    async def _connect(self) -> _Wire:
        async with self._connecting:
            if self._wire is not None and self._wire.failed is None:
                return self._wire
            wire = _Wire()
            replies = RawReplies(lambda reply: self._answer(wire, reply),
                                 lambda error: self._drop(wire, error))
            wire.connection, wire.transport = await open_raw(self._pool, replies)
            self._wire = wire
            return wire

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
