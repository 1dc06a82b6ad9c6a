"""Connecting to Redis: one server, a primary followed through Sentinel, or a Cluster.

The rest of chatfleet sees one client type, `RedisClient`. What differs by
deployment is decided here and in two flags the rest reads: a Cluster needs
sharded pub/sub (`is_cluster`) and cluster-safe session steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

RedisClient = Redis | RedisCluster

# Redis calls fail fast so a user gets `unavailable` or a 503 quickly, after
# two quick retries that hide a single dropped connection.
SOCKET_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 2.0
# When a dead instance's users all arrive here at once, requests queue for a
# pooled connection (up to the wait) instead of failing with 503 at once.
MAX_CONNECTIONS = 1000
POOL_WAIT_SECONDS = 2.0
# A Cluster client retries a command through a failover (MOVED, a dead
# primary) about this many times, re-reading the slot map in between.
CLUSTER_ATTEMPTS = 6
DEFAULT_SENTINEL_MASTER = "chatfleet"


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2)


def _addresses(text: str) -> list[tuple[str, int]]:
    """'10.0.0.2:7000,10.0.0.3:7000' -> [('10.0.0.2', 7000), ('10.0.0.3', 7000)]."""
    found = []
    for item in text.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"not host:port: {item.strip()!r}")
        found.append((host, int(port)))
    return found


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is. Exactly one of the three shapes, most specific first."""

    url: str = "redis://127.0.0.1:6380/0"
    cluster: str = ""  # seed nodes "host:port,..." (CHAT_REDIS_CLUSTER)
    sentinels: str = ""  # sentinels "host:port,..." (CHAT_REDIS_SENTINELS)
    sentinel_master: str = DEFAULT_SENTINEL_MASTER

    def describe(self) -> str:
        if self.cluster:
            return f"cluster {self.cluster}"
        if self.sentinels:
            return f"sentinel master {self.sentinel_master!r} via {self.sentinels}"
        return self.url


def connect(target: RedisTarget) -> RedisClient:
    if target.cluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in _addresses(target.cluster)],
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            max_connections=MAX_CONNECTIONS,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), retries=CLUSTER_ATTEMPTS),
        )
    if target.sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            _addresses(target.sentinels),
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            retry=_retry(),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        client: Redis = sentinel.master_for(target.sentinel_master, redis_class=Redis)
        return client
    pool = BlockingConnectionPool.from_url(
        target.url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_SECONDS,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        retry=_retry(),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return Redis(connection_pool=pool)


def is_cluster(redis: RedisClient) -> bool:
    return isinstance(redis, RedisCluster)


async def ping(redis: RedisClient) -> None:
    """Raise unless Redis answers. A Cluster answers if some primary does:
    one shard failing over must not take every instance out of HAProxy."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()  # no-op once the slot map is known
        failure: Exception = RedisError("no primary known")
        for node in random.sample(redis.get_primaries(), len(redis.get_primaries())):
            try:
                await redis.execute_command("PING", target_nodes=node)
                return
            except (RedisError, OSError) as error:
                failure = error
        raise failure
    else:
        await redis.ping()
