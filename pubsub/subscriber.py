"""The one subscriber connection of a process, and the one coroutine reading it.

Redis pub/sub is at-most-once: whatever is published while the connection is
down is gone. So every confirmed (re)subscription of a room channel is
reported, before any later message of that channel is handed on, and the bus
repairs the room from its stream while live delivery goes on
(pubsub/repair.py). Only this module (re)subscribes, on every new connection.

The connection is made by redis-py and then read here directly: whatever
arrived is parsed by hiredis in one go and handed on message by message,
with no per-message timeout scope or reply dict (internals/redis_lane.py
has the same for the publish path).

A connection can also be up but deaf. Every CANARY_INTERVAL_SECONDS the
process publishes to its own canary channel; if nothing arrives for
CANARY_DEADLINE_SECONDS the connection is thrown away and rebuilt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

import metrics
from internals.redis_lane import READ_CHUNK, open_raw, pack
from pubsub.backoff import Backoff

log = logging.getLogger(__name__)

# A join waits this long for Redis to confirm a new subscription before the
# client is told `unavailable`.
SUBSCRIBE_TIMEOUT_SECONDS = 5.0
CANARY_INTERVAL_SECONDS = 2.0
# Three missed canaries: the connection is deaf, rebuild it.
CANARY_DEADLINE_SECONDS = 3 * CANARY_INTERVAL_SECONDS
# A stop (SIGTERM's drain, a test's teardown) waits at most this long for the
# reader to end and the connection to close: it must finish even if a Redis
# call caught mid-cancellation never returns.
STOP_WAIT_SECONDS = 5.0

RECONNECTS = metrics.counter(
    "chat_subscriber_reconnects_total", "Subscriber connections rebuilt after an error"
)
DEAF = metrics.counter(
    "chat_subscriber_deaf_total", "Subscriber connections found deaf by the canary"
)
REPAIRS = metrics.counter(
    "chat_subscriber_repairs_total", "Room channels (re)subscribed, so repaired from history"
)
REDIS_ERRORS = metrics.counter("chat_redis_errors_total", "Redis calls that failed")


class DeafConnection(Exception):
    """The subscriber connection stopped delivering our own canary."""


MessageHandler = Callable[[bytes, bytes], None]
# Told, before any later message of the channel, that a room channel was
# (re)subscribed: what it carried meanwhile must be read from the stream.
RepairHandler = Callable[[bytes], None]


class Subscriber:
    """Keeps the wanted channels subscribed on one connection and feeds `on_message`."""

    def __init__(
        self,
        redis: Redis,
        canary_channel: str,
        on_message: MessageHandler,
        repair: RepairHandler,
        standing: tuple[str, ...] = (),
        *,
        sharded: bool = False,
        on_lost: Callable[[], None] | None = None,
        on_moved: Callable[[bytes], None] | None = None,
    ) -> None:
        """`sharded`: room channels are shard channels (SSUBSCRIBE) of the node
        `redis` talks to; `on_lost` hears of every lost connection and
        `on_moved` of every channel whose slot the node gave away, so a
        Cluster-wide owner can route them anew (pubsub/sharded.py)."""
        self.redis = redis
        self.canary = canary_channel.encode()
        self.on_message = on_message
        self.repair = repair
        self.sharded = sharded
        self.on_lost = on_lost
        self.on_moved = on_moved
        # The canary and `standing` channels stay subscribed (plain SUBSCRIBE)
        # for the process's life; `wanted` are the room channels.
        self.standing: set[bytes] = {self.canary, *(name.encode() for name in standing)}
        self.wanted: set[bytes] = set() if sharded else set(self.standing)
        self.confirmed: set[bytes] = set()
        self.connected = False
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        # The live connection (kept: redis-py closes a collected one's socket).
        self._connection: AbstractConnection | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._deaf = False
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_canary = time.monotonic()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="subscriber"),
            asyncio.create_task(self._send_canaries(), name="canary"),
        ]

    async def stop(self, timeout: float = 2 * STOP_WAIT_SECONDS) -> None:
        """Cancel the reader and canary and close the connection, within `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            done, stuck = await asyncio.wait(self._tasks, timeout=max(0.0, timeout / 2))
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("subscriber task %s had failed", task.get_name(),
                              exc_info=task.exception())
            for task in stuck:
                log.error("subscriber task %s did not stop in time", task.get_name())
        try:
            await asyncio.wait_for(self._close(), max(0.01, deadline - loop.time()))
        except TimeoutError:
            log.error("subscriber connection did not close in time")

    async def subscribe(self, channel: str) -> None:
        """Subscribe (if needed) and return once Redis has confirmed it."""
        name = channel.encode()
        self.wanted.add(name)
        if name in self.confirmed:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, []).append(waiter)
        await self._send("subscribe", name)
        await asyncio.wait_for(waiter, SUBSCRIBE_TIMEOUT_SECONDS)

    async def unsubscribe(self, channel: str) -> None:
        name = channel.encode()
        self.wanted.discard(name)
        self.confirmed.discard(name)
        await self._send("unsubscribe", name)

    def forget(self, channel: bytes) -> None:
        """Stop wanting `channel` without telling the node (its slot lives elsewhere now)."""
        self.wanted.discard(channel)
        self.confirmed.discard(channel)

    async def _send(self, command: str, name: bytes) -> None:
        """(Un)subscribe on the live connection; if there is none, the reader will."""
        if self.sharded:
            command = "s" + command
        async with self._lock:
            if not self.connected or self._writer is None:
                return
            try:
                self._writer.write(pack(command.upper(), name))
            except (OSError, RuntimeError):
                REDIS_ERRORS.inc()  # the reader rebuilds and subscribes every wanted channel

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._connect()
                backoff.reset()
                await self._read_forever()
            except asyncio.CancelledError:
                raise
            except DeafConnection:
                self._deaf = False
                DEAF.inc()
                log.error("subscriber connection is deaf (no canary for %.0fs): rebuilding",
                          CANARY_DEADLINE_SECONDS)
            except (RedisError, OSError, hiredis.ProtocolError) as error:
                REDIS_ERRORS.inc()
                log.warning("subscriber connection lost (%s): reconnecting", type(error).__name__)
            except Exception:
                # A bug must not silently end live fan-out for this process:
                # log it and rebuild, as for a lost connection.
                log.exception("subscriber failed: rebuilding")
            self.connected = False
            self.confirmed.clear()
            await self._close()
            RECONNECTS.inc()
            if self.on_lost is not None:
                self.on_lost()
            await backoff.wait()

    async def _connect(self) -> None:
        async with self._lock:
            self._connection, self._reader, self._writer = await open_raw(
                self.redis.connection_pool)
            # One SSUBSCRIBE per channel: a call may only name channels of one slot.
            # A copy: joins and leaves change `wanted` during these awaits.
            if self.sharded:
                orders = [pack("SUBSCRIBE", *self.standing)] + [pack("SSUBSCRIBE", name)
                                                                for name in list(self.wanted)]
            else:
                orders = [pack("SUBSCRIBE", *self.wanted)]
            self._writer.write(b"".join(orders))
            self.connected = True
            self._last_canary = time.monotonic()

    async def _read_forever(self) -> None:
        reader = self._reader
        assert reader is not None
        parser = hiredis.Reader()
        while True:
            data = await reader.read(READ_CHUNK)
            if self._deaf:
                raise DeafConnection()
            if not data:
                raise RedisConnectionError("Redis closed the subscriber connection")
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                self._handle(reply)

    def _handle(self, reply: object) -> None:
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))  # e.g. MOVED for a shard channel: rebuild
        if not isinstance(reply, list) or len(reply) < 3:
            return  # a pong
        kind, channel = reply[0], reply[1]
        if kind in (b"message", b"smessage"):
            data = reply[2]
            if channel == self.canary:
                self._last_canary = time.monotonic()
            elif isinstance(data, bytes):
                self.on_message(channel, data)
        elif kind in (b"subscribe", b"ssubscribe"):
            if channel in self.wanted and channel not in self.standing:
                # Anything published before this confirmation may be missing
                # here: the bus repairs it from the stream (pubsub/repair.py).
                REPAIRS.inc()
                self.repair(channel)
            self.confirmed.add(channel)
            for waiter in self._waiters.pop(channel, []):
                if not waiter.done():
                    waiter.set_result(None)
        elif kind == b"sunsubscribe" and channel in self.wanted and self.on_moved is not None:
            # Not asked for: the node gave the channel's slot away (resharding,
            # or it became a replica). Whoever owns it now takes it over.
            self.forget(channel)
            self.on_moved(channel)
        elif kind in (b"unsubscribe", b"sunsubscribe") and channel not in self.wanted:
            self.confirmed.discard(channel)

    async def _send_canaries(self) -> None:
        while True:
            await asyncio.sleep(CANARY_INTERVAL_SECONDS)
            if not self.connected:
                continue
            if time.monotonic() - self._last_canary > CANARY_DEADLINE_SECONDS:
                # Deaf: end the connection under the reader, which rebuilds it.
                self._deaf = True
                if self._writer is not None:
                    self._writer.transport.abort()
                continue
            try:
                await self.redis.publish(self.canary.decode(), b"")
            except (RedisError, OSError):
                REDIS_ERRORS.inc()
                # Redis itself is away: the reader finds out on its own; do
                # not let the missing canary also count as deafness.
                self._last_canary = time.monotonic()

    async def _close(self) -> None:
        writer, self._writer, self._reader, self._connection = (
            self._writer, None, None, None)
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, RuntimeError):
                pass
