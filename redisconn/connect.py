"""Connecting to Redis: one server, a primary followed through Sentinel, or a Cluster.

`open_topology` makes the process's clients for a `RedisTarget`; what differs
by deployment after that is the `Topology`'s business (redisconn/topology.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from redisconn.topology import RedisClient, Topology

# Redis calls fail fast so a user gets `unavailable` or a 503 quickly, after
# two quick retries that hide a single dropped connection.
SOCKET_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 2.0
# When a dead instance's users all arrive here at once, requests queue for
# one of a hundred pooled connections, for up to ten seconds, instead of
# failing with 503 (README: Performance, reconnect storm, has the figures).
# A Redis that is down refuses connections and still fails at once.
MAX_CONNECTIONS = 100
POOL_WAIT_SECONDS = 10.0
# Health checks come one at a time per HAProxy; two leave room for a second one.
PROBE_CONNECTIONS = 2
# A Cluster client retries a command through a failover (MOVED, a dead
# primary) about this many times, re-reading the slot map in between.
CLUSTER_ATTEMPTS = 6
DEFAULT_SENTINEL_MASTER = "chatfleet"
# What each connection tells Redis (CLIENT SETINFO), built once: left to
# redis-py, every new connection looks the package version up again, a
# visible share of a survivor's CPU in a reconnect storm (README: Performance).
DRIVER_INFO = DriverInfo()


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


def connect(target: RedisTarget, pool_size: int = MAX_CONNECTIONS) -> RedisClient:
    """A client for `target`; `pool_size` bounds its connections to one server."""
    if target.cluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in _addresses(target.cluster)],
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            max_connections=pool_size,
            driver_info=DRIVER_INFO,
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
        client: Redis = sentinel.master_for(target.sentinel_master, redis_class=Redis,
                                            max_connections=pool_size, driver_info=DRIVER_INFO)
        return client
    pool = BlockingConnectionPool.from_url(
        target.url,
        max_connections=pool_size,
        timeout=POOL_WAIT_SECONDS,
        driver_info=DRIVER_INFO,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        retry=_retry(),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return Redis(connection_pool=pool)


def connect_probe(target: RedisTarget) -> RedisClient | None:
    """A client of its own for health checks, with PROBE_CONNECTIONS connections.

    The health check must say whether Redis answers, not whether the busy
    pool has a connection free: when a dead instance's users all arrive here
    at once, a check waiting behind them times out and HAProxy would take
    this live instance out too. None for a Cluster: its client keeps a
    connection list per node that never makes a command wait, and the health
    ping is also what first loads its slot map.
    """
    if target.cluster:
        return None
    return connect(target, pool_size=PROBE_CONNECTIONS)


def open_topology(target: RedisTarget) -> Topology:
    """The process's Redis: its client and health probe, chosen once from `target`."""
    return Topology(connect(target), connect_probe(target), SOCKET_TIMEOUT_SECONDS)
