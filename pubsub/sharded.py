"""Live fan-out over a Redis Cluster: room channels as shard channels.

SPUBLISH sends a message only to the shard that owns the channel's slot, so
a process must SSUBSCRIBE each room channel on the primary that owns it.
This keeps one `Subscriber` (one connection, canary, repair on every
(re)subscription) per primary that owns a wanted channel, and routes each
channel to its owner by the client's slot map.

When the map changes (a slot moved, a primary failed over), the node that
lost a slot says so (a `sunsubscribe` we did not ask for) or its connection
drops. Either way the slot map is read again and every channel whose owner
changed is subscribed on the new owner, whose confirmation triggers the
usual repair from the room's stream: nothing published meanwhile is missed.

redis-py has its own ClusterPubSub; this small layer is used instead so that
every resubscription, however it happens, goes through the one repair path.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError

import metrics
from pubsub.backoff import Backoff
from pubsub.subscriber import (
    REDIS_ERRORS,
    MessageHandler,
    RepairHandler,
    Subscriber,
)
from redisconn.connect import CONNECT_TIMEOUT_SECONDS, SOCKET_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

# A Cluster notices a dead primary and promotes its replica within its node
# timeout (seconds); until then the channels it had wait for their new owner.
FAILOVER_GRACE_SECONDS = 15.0

REROUTES = metrics.counter(
    "chat_subscriber_reroutes_total", "Shard channels moved to a new owner after a slot move"
)


class ShardedSubscriber:
    """The Subscriber interface the bus uses, spread over a Cluster's primaries."""

    def __init__(
        self,
        cluster: RedisCluster,
        canary_channel: str,
        on_message: MessageHandler,
        repair: RepairHandler,
        standing: tuple[str, ...] = (),
    ) -> None:
        self.cluster = cluster
        self.canary = canary_channel
        self.on_message = on_message
        self.repair = repair
        self.standing = {name.encode() for name in standing}
        self.wanted: set[bytes] = set(self.standing)
        self.owner: dict[bytes, str] = {}  # channel -> name of the node subscribed to it
        self.nodes: dict[str, Subscriber] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscribing: set[asyncio.Task[None]] = set()  # referenced until done
        self._lost_at = float("-inf")  # when a node's connection was last lost

    @property
    def connected(self) -> bool:
        """Some shard is reachable. One shard failing over does not make every
        instance unhealthy: its rooms wait, the others chat on; and a process
        whose only node just went down counts as connected while the Cluster
        promotes a replica and its channels move there (FAILOVER_GRACE_SECONDS)."""
        if any(sub.connected for sub in self.nodes.values()):
            return True
        return time.monotonic() - self._lost_at < FAILOVER_GRACE_SECONDS

    def start(self) -> None:
        self._changed.set()  # route the standing channels
        self._task = asyncio.create_task(self._follow_slot_map(), name="shard-router")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop following the slot map and every node's subscriber, within `timeout`."""
        if self._task is not None:
            self._task.cancel()
            _, stuck = await asyncio.wait({self._task}, timeout=timeout / 4)
            if stuck:
                log.error("slot-map follower did not stop in time")
        await asyncio.gather(*(sub.stop(timeout * 3 / 4) for sub in self.nodes.values()))
        self.nodes.clear()

    async def subscribe(self, channel: str) -> None:
        name = channel.encode()
        self.wanted.add(name)
        await self.cluster.initialize()  # no-op once the slot map is known
        await self._route(name).subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        name = channel.encode()
        self.wanted.discard(name)
        node = self.owner.pop(name, None)
        if node is not None and node in self.nodes:
            await self.nodes[node].unsubscribe(channel)

    def _route(self, name: bytes) -> Subscriber:
        """The subscriber of the primary owning `name` now; moves it there if it was elsewhere."""
        node = self.cluster.get_node_from_key(name.decode())
        if node is None:
            raise RedisError("no primary owns the slot")
        previous = self.owner.get(name)
        if previous is not None and previous != node.name and previous in self.nodes:
            self.nodes[previous].forget(name)
            REROUTES.inc()
        self.owner[name] = node.name
        return self.nodes.get(node.name) or self._start_node(node)

    def _start_node(self, node: ClusterNode) -> Subscriber:
        client = Redis(host=node.host, port=int(node.port), socket_timeout=SOCKET_TIMEOUT_SECONDS,
                       socket_connect_timeout=CONNECT_TIMEOUT_SECONDS)
        sub = Subscriber(
            client, f"{self.canary}:{node.name}", self.on_message, self.repair,
            sharded=True, on_lost=self._node_lost, on_moved=lambda _: self._changed.set(),
        )
        self.nodes[node.name] = sub
        sub.start()
        return sub

    def _node_lost(self) -> None:
        self._lost_at = time.monotonic()
        self._changed.set()

    async def _follow_slot_map(self) -> None:
        backoff = Backoff()
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self.cluster.nodes_manager.initialize()
                await self._reroute()
                backoff.reset()
            except (RedisError, OSError) as error:
                REDIS_ERRORS.inc()
                log.warning("reading the cluster slot map failed (%s): retrying",
                            type(error).__name__)
                self._changed.set()
            # A failover takes seconds: do not re-read the map on every lost connection.
            await backoff.wait()

    async def _reroute(self) -> None:
        for name in list(self.wanted):
            before = self.owner.get(name)
            sub = self._route(name)
            # A new owner, or the same one after it said the slot was gone
            # (our slot map may lag behind: it answers MOVED, and we come back).
            if self.owner[name] != before or name not in sub.wanted:
                log.info("channel %r now on %s", name, self.owner[name])
                sub.wanted.add(name)
                # Subscribes now if connected, else on connect; repair follows either way.
                task = asyncio.create_task(self._quietly(sub, name))
                self._subscribing.add(task)
                task.add_done_callback(self._subscribing.discard)
        for node, sub in list(self.nodes.items()):
            if not sub.wanted:
                del self.nodes[node]
                await sub.stop()
                await sub.redis.aclose()

    @staticmethod
    async def _quietly(sub: Subscriber, name: bytes) -> None:
        try:
            await sub.subscribe(name.decode())
        except (RedisError, OSError, TimeoutError):
            REDIS_ERRORS.inc()  # the node's subscriber subscribes it when it reconnects
