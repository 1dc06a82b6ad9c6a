"""The stack's settings, from the environment (README: Configuration)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The Sentinel master name chat_server.py follows unless told otherwise.
from redisconn.connect import DEFAULT_SENTINEL_MASTER

PROJECT = Path(__file__).resolve().parent.parent

# The longest path a Unix socket may have (sun_path), with room for the name.
UNIX_PATH_LIMIT = 100

# PROTOCOL.md: N defaults to the number of cores, at least 2, so there is
# always another process to fail over to.
MIN_INSTANCES = 2


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class StackSettings:
    http_port: int = 8000
    instances: int = MIN_INSTANCES
    port_base: int = 8000
    redis_port: int = 6380
    redis_url: str = ""          # an outside Redis; empty: start our own on redis_port
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

    @property
    def starts_redis(self) -> bool:
        return not (self.redis_url or self.redis_cluster or self.redis_sentinels)

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

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
            var=Path(os.environ.get("CHAT_VAR", "").strip() or PROJECT / "var").resolve(),
            address=os.environ.get("CHAT_ADDRESS", "").strip() or "127.0.0.1",
            starts_haproxy=_bool("CHAT_START_HAPROXY", True),
            redis_cluster=os.environ.get("CHAT_REDIS_CLUSTER", "").strip(),
            redis_sentinels=os.environ.get("CHAT_REDIS_SENTINELS", "").strip(),
            sentinel_master=(os.environ.get("CHAT_REDIS_SENTINEL_MASTER", "").strip()
                             or DEFAULT_SENTINEL_MASTER),
        )
