"""The stack's settings, from the environment (README: Configuration)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# New accounts per client address per hour, counted by the instances in Redis.
from accounts.throttle import SIGNUPS_PER_ADDRESS_HOUR

# The largest request body an instance takes (HAProxy renders the same number).
from handlers.edge import MAX_BODY_BYTES

# The Sentinel master name chat_server.py follows unless told otherwise.
from redisconn.connect import DEFAULT_SENTINEL_MASTER
from stack.tls import FrontTls

PROJECT = Path(__file__).resolve().parent.parent

# The longest path a Unix socket may have (sun_path), with room for the name.
UNIX_PATH_LIMIT = 100

# docs/protocol.md: N defaults to the number of cores, at least 2, so there is
# always another process to fail over to.
MIN_INSTANCES = 2

# Per client address, at the front door (README: Security). Far above what an
# office behind one NAT address does (a tab holds one WebSocket plus a few
# requests; a reload opens a handful of connections), far below a flood.
MAX_CONNS_PER_ADDRESS = 1000       # open at once
MAX_NEW_CONNS_PER_ADDRESS = 500    # opened per 10 s
MAX_LOGINS_PER_ADDRESS = 60        # POST /login or /signup per minute

# HAProxy's Prometheus exporter (docs/ops/prometheus.yml), on localhost only:
# 8404 is the port HAProxy's own documentation gives its stats and exporter.
HAPROXY_METRICS_PORT = 8404
# HAProxy checks each instance every second; --drain-wait (3 s) covers two.
CHECK_INTERVAL_MS = 1000


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class EdgeLimits:
    """What the front door's haproxy.cfg bounds; a per-address limit of 0 is off."""

    max_conns_per_address: int = MAX_CONNS_PER_ADDRESS
    max_new_conns_per_address: int = MAX_NEW_CONNS_PER_ADDRESS
    max_logins_per_address: int = MAX_LOGINS_PER_ADDRESS
    # Counted by the instances (CHAT_SIGNUPS_PER_HOUR), a per-address limit all the same.
    max_signups_per_address_hour: int = SIGNUPS_PER_ADDRESS_HOUR
    # Also each instance's --max-body-bytes (CHAT_MAX_BODY_BYTES), so both agree.
    max_body_bytes: int = MAX_BODY_BYTES
    # How often this HAProxy checks each instance's /healthz while all is well
    # (after a failed check it checks every 500 ms). Where several HAProxy
    # processes front the same instances, each may check less often and the
    # instances still see the same number of checks.
    check_interval_ms: int = CHECK_INTERVAL_MS

    @classmethod
    def per_address_off(cls) -> EdgeLimits:
        """For stacks whose every client is on one address: tests and bench tools."""
        return cls(max_conns_per_address=0, max_new_conns_per_address=0,
                   max_logins_per_address=0, max_signups_per_address_hour=0)

    @classmethod
    def from_env(cls) -> EdgeLimits:
        return cls(
            max_conns_per_address=_int("CHAT_MAX_CONNS_PER_ADDRESS", MAX_CONNS_PER_ADDRESS),
            max_new_conns_per_address=_int("CHAT_MAX_NEW_CONNS_PER_ADDRESS",
                                           MAX_NEW_CONNS_PER_ADDRESS),
            max_logins_per_address=_int("CHAT_MAX_LOGINS_PER_ADDRESS", MAX_LOGINS_PER_ADDRESS),
            max_signups_per_address_hour=_int("CHAT_SIGNUPS_PER_HOUR", SIGNUPS_PER_ADDRESS_HOUR),
            max_body_bytes=_int("CHAT_MAX_BODY_BYTES", MAX_BODY_BYTES),
            check_interval_ms=_int("CHAT_HAPROXY_CHECK_MS", CHECK_INTERVAL_MS),
        )


# The Redis the stack starts may use this share of the machine's memory; past
# it writes are refused (noeviction: never drop a session or a message to make
# room), chat answers `unavailable` and pages 503, until an operator acts.
REDIS_MEMORY_SHARE = 0.25


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_redis_maxmemory() -> str:
    return str(int(machine_memory_bytes() * REDIS_MEMORY_SHARE))


@dataclass(frozen=True)
class StackSettings:
    http_port: int = 8000
    instances: int = MIN_INSTANCES
    port_base: int = 8000
    redis_port: int = 6380
    redis_url: str = ""          # an outside Redis; empty: start our own on redis_port
    # The started Redis's maxmemory (bytes, or Redis units like "2gb").
    redis_maxmemory: str = field(default_factory=default_redis_maxmemory)
    var: Path = PROJECT / "var"
    # Many hosts (README: deploy shape): a chat host binds its own address and
    # runs no HAProxy; the front door is rendered by `python -m stack.hosts`.
    address: str = "127.0.0.1"
    starts_haproxy: bool = True
    # An outside Redis Cluster (seeds "host:port,...") or Sentinel set
    # ("host:port,..." plus the master name); either means no Redis is started.
    redis_cluster: str = ""
    redis_sentinels: str = ""
    sentinel_master: str = DEFAULT_SENTINEL_MASTER
    edge: EdgeLimits = field(default_factory=EdgeLimits)
    # Addresses whose X-Forwarded-For/-Proto the instances believe (a front door
    # on another host); empty: see `instance_trusted_proxies`.
    trusted_proxies: str = ""
    # "accounts" (default: a name needs its password) or "open" (name only: demos,
    # and the load tools and chat tests that log in thousands of names).
    auth: str = "accounts"
    # HTTPS at HAProxy (CHAT_TLS_CERT, CHAT_HTTPS_PORT); None: plain HTTP only.
    tls: FrontTls | None = None
    # HAProxy's Prometheus exporter listens on 127.0.0.1 here; 0: none.
    haproxy_metrics_port: int = HAPROXY_METRICS_PORT

    @property
    def haproxy_metrics_bind(self) -> str:
        """Where HAProxy serves its own /metrics ("" when it does not)."""
        return f"127.0.0.1:{self.haproxy_metrics_port}" if self.haproxy_metrics_port else ""

    @property
    def instance_trusted_proxies(self) -> str:
        """What the instances trust besides their Unix socket: the addresses given, else
        on one box whose HAProxy must use TCP (a state path too long for a socket's)
        the address HAProxy reaches them on, which is its own source address there."""
        if self.trusted_proxies or not self.starts_haproxy or self.unix_socket_dir:
            return self.trusted_proxies
        return self.address

    @property
    def starts_redis(self) -> bool:
        return not (self.redis_url or self.redis_cluster or self.redis_sentinels)

    @property
    def effective_redis_url(self) -> str:
        """The Redis's TCP address: for tools, backups and anything off this box."""
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def redis_socket(self) -> str:
        """The Unix socket the Redis started here also listens on; empty when this
        stack starts no Redis, or the state folder's path is too long for a socket's."""
        path = self.var / "redis.sock"
        if not self.starts_redis or len(str(path)) > UNIX_PATH_LIMIT:
            return ""
        return str(path)

    @property
    def instance_redis_url(self) -> str:
        """What the instances use: the Unix socket of the Redis beside them, which
        costs each call less than loopback TCP (README: Performance), else
        `effective_redis_url`."""
        if self.redis_socket:
            return f"unix://{self.redis_socket}?db=0"
        return self.effective_redis_url

    def instance_ports(self) -> list[int]:
        return [self.port_base + n for n in range(1, self.instances + 1)]

    @property
    def unix_socket_dir(self) -> str:
        """Where the instances also listen on Unix sockets for the HAProxy beside
        them; empty (TCP only) on a chat host behind a remote front door, or when
        the state folder's path is too long for a socket's."""
        if not self.starts_haproxy or len(str(self.unix_socket(self.instances))) > UNIX_PATH_LIMIT:
            return ""
        return str(self.var)

    def unix_socket(self, n: int) -> Path:
        """Instance n's Unix socket (chat_server.py --unix-socket-dir names it so)."""
        return self.var / f"chat-{n}.sock"

    @classmethod
    def from_env(cls) -> StackSettings:
        return cls(
            http_port=_int("CHAT_HTTP_PORT", 8000),
            instances=max(MIN_INSTANCES, _int("CHAT_INSTANCES", os.cpu_count() or 1)),
            port_base=_int("CHAT_PORT_BASE", 8000),
            redis_port=_int("CHAT_REDIS_PORT", 6380),
            redis_url=os.environ.get("CHAT_REDIS_URL", "").strip(),
            redis_maxmemory=(os.environ.get("CHAT_REDIS_MAXMEMORY", "").strip()
                             or default_redis_maxmemory()),
            var=Path(os.environ.get("CHAT_VAR", "").strip() or PROJECT / "var").resolve(),
            address=os.environ.get("CHAT_ADDRESS", "").strip() or "127.0.0.1",
            starts_haproxy=_bool("CHAT_START_HAPROXY", True),
            redis_cluster=os.environ.get("CHAT_REDIS_CLUSTER", "").strip(),
            redis_sentinels=os.environ.get("CHAT_REDIS_SENTINELS", "").strip(),
            sentinel_master=(os.environ.get("CHAT_REDIS_SENTINEL_MASTER", "").strip()
                             or DEFAULT_SENTINEL_MASTER),
            edge=EdgeLimits.from_env(),
            trusted_proxies=os.environ.get("CHAT_TRUSTED_PROXIES", "").strip(),
            auth=os.environ.get("CHAT_AUTH", "").strip() or "accounts",
            tls=FrontTls.from_env(),
            haproxy_metrics_port=_int("CHAT_HAPROXY_METRICS_PORT", HAPROXY_METRICS_PORT),
        )
