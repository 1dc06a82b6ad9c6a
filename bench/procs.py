"""What the idle and storm tools read about processes: RSS and CPU from /proc, the fd limit,
and a target of their own (bench/targets.py, rate limit off) with its pids by role."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.targets import ChatfleetTarget, SocketioTarget, Target, start_target
from stack.settings import EdgeLimits

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")



def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_of(pids: list[int]) -> float:
    """CPU seconds of several processes together."""
    return sum(cpu_seconds(pid) for pid in pids)


def rss_bytes(pid: int) -> int:
    """Resident set size now (statm's second field, in pages)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES


def haproxy_pids(target: Target) -> list[int]:
    """The HAProxy processes in front of `target` (none if it has none running):
    chatfleet's master and the worker that carries the traffic (supervisord.conf)."""
    if isinstance(target, ChatfleetTarget):
        return target.stack.haproxy_pids()
    if isinstance(target, SocketioTarget) and target.haproxy is not None:
        return [target.haproxy.pid]
    return []


def roles(target: Target) -> dict[str, list[int]]:
    """The target's processes by role: {"app": [...], "haproxy": [...], "redis": [pid]}.

    "app" is the chat processes: chatfleet's instances, or the socketio peers.
    """
    return {"app": [p for p in target.instance_pids() if p],
            "haproxy": haproxy_pids(target), "redis": [target.redis.pid]}


@contextlib.contextmanager
def bench_target(kind: str, instances: int, env: dict[str, str] | None = None,
                 edge: EdgeLimits | None = None, auth: str = "open") -> Iterator[Target]:
    """Start a target of `kind` (rate limit off) in a fresh folder; stop it and remove it after.

    `edge`: the front door's per-address limits (default off: bench clients share loopback).
    `auth`: "open" (a name alone logs in) or "accounts" (chatfleet only).
    """
    var = Path(tempfile.mkdtemp(prefix=f"chatfleet-bench-{kind}-"))
    try:
        target = start_target(kind, instances, var, env=env, edge=edge, auth=auth)
        try:
            yield target
        finally:
            target.stop()
    finally:
        shutil.rmtree(var, ignore_errors=True)
