"""The instances reach the Redis started beside them over its Unix socket
(cheaper per call than loopback TCP); tools and other hosts keep its TCP port."""

from __future__ import annotations

import stat
from pathlib import Path

from redis import Redis

from stack.run import Stack
from stack.settings import UNIX_PATH_LIMIT, StackSettings


def test_instances_use_the_socket_of_the_redis_started_here(tmp_path: Path) -> None:
    settings = StackSettings(var=tmp_path, redis_port=6390)
    assert settings.redis_socket == str(tmp_path / "redis.sock")
    assert settings.instance_redis_url == f"unix://{tmp_path}/redis.sock?db=0"
    assert settings.effective_redis_url == "redis://127.0.0.1:6390/0"


def test_an_outside_redis_is_reached_at_its_url(tmp_path: Path) -> None:
    settings = StackSettings(var=tmp_path, redis_url="redis://10.0.0.5:6379/0")
    assert settings.redis_socket == ""
    assert settings.instance_redis_url == "redis://10.0.0.5:6379/0"


def test_a_state_path_too_long_for_a_socket_falls_back_to_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * UNIX_PATH_LIMIT)
    settings = StackSettings(var=deep, redis_port=6390)
    assert settings.redis_socket == ""
    assert settings.instance_redis_url == "redis://127.0.0.1:6390/0"


def test_the_running_instances_talk_to_redis_over_its_socket(stack: Stack) -> None:
    sock = Path(stack.settings.redis_socket)
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o700  # nobody else on the box may use it
    with Redis.from_url(stack.settings.effective_redis_url) as redis:
        clients = redis.client_list()
    on_socket = [c for c in clients if c.get("laddr", "").startswith(str(sock))]
    # Each instance keeps at least its publish lane and its subscriber there.
    assert len(on_socket) >= 2 * stack.settings.instances, clients
    assert any("P" in c.get("flags", "") for c in on_socket), on_socket  # the subscribers
