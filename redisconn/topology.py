"""The Redis deployment a process uses, chosen once: one server (or a
Sentinel-followed primary), or a Cluster.

Everything that differs between them is a method or property here, so the
bus, the publisher, the session store and the health check never ask which
kind of client they hold.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from internals.redis_lane import RedisLane

RedisClient = Redis | RedisCluster
T = TypeVar("T")


class Topology:
    """One Redis deployment: its client, its health probe and what it can do."""

    def __init__(self, client: RedisClient, probe: RedisClient | None = None,
                 timeout: float = 5.0) -> None:
        """`timeout`: how long the lane waits for a reply (the client's socket timeout)."""
        self.client = client
        # Health pings on a client of their own (redisconn.connect_probe).
        self.probe = probe or client
        self._timeout = timeout
        self._lane: RedisLane | None = None

    @property
    def sharded(self) -> bool:
        """A Cluster: room channels are shard channels (SPUBLISH/SSUBSCRIBE), and
        keys of different slots cannot meet in one script."""
        return isinstance(self.client, RedisCluster)

    @property
    def single_node(self) -> Redis | None:
        """The client when one server holds everything (WAIT works), else None."""
        return self.client if isinstance(self.client, Redis) else None

    @property
    def lane(self) -> RedisLane | None:
        """The pipelined connection for the hot path (chat publishes) on one
        server; None on a Cluster, whose client routes each key to its node."""
        client = self.single_node
        if client is not None and self._lane is None:
            self._lane = RedisLane(client, self._timeout)
        return self._lane

    async def pipelined(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The replies to single-key `commands`, sent together; the first error
        reply raised. On one server they go on the lane (hiredis-packed, one
        write: redis-py's pipeline was most of the periodic session check's
        CPU); a Cluster's pipeline routes each key to its node."""
        lane = self.lane
        if lane is None:
            async with self.client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                return list(await pipe.execute())
        replies = await lane.call_many(commands)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    def choose(self, single: Callable[[Redis], T], cluster: Callable[[RedisCluster], T]) -> T:
        """Build what differs by deployment (the subscriber) from the right client."""
        if isinstance(self.client, RedisCluster):
            return cluster(self.client)
        return single(self.client)

    async def publish(self, channel: str, payload: bytes) -> None:
        """Live only: PUBLISH, or SPUBLISH to the channel's shard on a Cluster."""
        if isinstance(self.client, RedisCluster):
            await self.client.spublish(channel, payload)
        else:
            await self.client.publish(channel, payload)

    async def ping(self) -> None:
        """Raise unless Redis answers. A Cluster answers if some primary does:
        one shard failing over must not take every instance out of HAProxy."""
        probe = self.probe
        if isinstance(probe, RedisCluster):
            await probe.initialize()  # no-op once the slot map is known
            failure: Exception = RedisError("no primary known")
            primaries = probe.get_primaries()
            for node in random.sample(primaries, len(primaries)):
                try:
                    await probe.execute_command("PING", target_nodes=node)
                    return
                except (RedisError, OSError) as error:
                    failure = error
            raise failure
        await probe.ping()

    async def aclose(self) -> None:
        if self._lane is not None:
            await self._lane.aclose()
        await self.client.aclose()
        if self.probe is not self.client:
            await self.probe.aclose()


def topology_of(client: RedisClient, probe: RedisClient | None = None) -> Topology:
    """The topology of a client made elsewhere (tests, bench tools)."""
    return Topology(client, probe)
