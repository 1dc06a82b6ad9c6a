"""`make status`: each instance's state without supervisorctl, as a table.

For each chat instance: its own /healthz (readiness: 200 while it can serve,
503 while draining or without Redis; no answer: not running), HAProxy's view
of it over the stats socket (UP, DOWN, MAINT; its current sessions and last
check), and its open WebSockets from its own /metrics. Then Redis's PING.
Reads the same settings as `make run` (README: Configuration).

Exits 0 when every instance is ready and (where HAProxy runs here) UP, and
Redis answers; 1 otherwise, so a script or an orchestrator's probe can use it.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from prometheus_client.parser import text_string_to_metric_families

from stack.haproxy_stats import parse_server_rows, read_show_stat
from stack.settings import StackSettings

PROBE_TIMEOUT_SECONDS = 2.0
HEADER = ("instance", "address", "healthz", "haproxy", "check", "sessions", "sockets")


@dataclass(frozen=True)
class InstanceState:
    name: str
    address: str
    healthz: str      # "200 ok", "503 draining", "not answering"
    ready: bool
    haproxy: str      # UP, DOWN, MAINT ..., "-" without HAProxy here
    check: str        # HAProxy's last check (L7OK, L4CON ...)
    sessions: str     # HAProxy's current sessions to it
    sockets: str      # chat_open_sockets from its /metrics


def probe(url: str) -> tuple[int, str]:
    """(status, body) of a GET, or (0, why) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_SECONDS) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, "not answering"


def open_sockets(metrics_page: str) -> str:
    for family in text_string_to_metric_families(metrics_page):
        if family.name == "chat_open_sockets" and family.samples:
            return str(int(family.samples[0].value))
    return "?"


def instance_states(settings: StackSettings) -> list[InstanceState]:
    rows: dict[str, dict[str, str]] = {}
    haproxy_here = settings.starts_haproxy
    if haproxy_here:
        try:
            rows = parse_server_rows(read_show_stat(settings.var / "haproxy.sock"))
        except (OSError, ValueError):
            rows = {}  # not running: every instance shows "?"
    states = []
    for n, port in enumerate(settings.instance_ports(), start=1):
        name, address = f"chat{n}", f"{settings.address}:{port}"
        status, body = probe(f"http://{address}/healthz")
        healthz = f"{status} {body.strip()}" if status else body
        metrics_status, page = probe(f"http://{address}/metrics")
        row = rows.get(name, {})
        states.append(InstanceState(
            name=name, address=address, healthz=healthz, ready=status == 200,
            haproxy=row.get("status", "?") if haproxy_here else "-",
            check=row.get("check_status", "") or "-",
            sessions=row.get("scur", "") or "-",
            sockets=open_sockets(page) if metrics_status == 200 else "-",
        ))
    return states


def redis_state(settings: StackSettings) -> tuple[str, bool]:
    """Redis's answer to PING at the stack's Redis (the first seed of a Cluster)."""
    if settings.redis_cluster or settings.redis_sentinels:
        return "Cluster or Sentinel: see redis-cli", True
    try:
        with redis.Redis.from_url(settings.effective_redis_url,
                                  socket_timeout=PROBE_TIMEOUT_SECONDS,
                                  socket_connect_timeout=PROBE_TIMEOUT_SECONDS) as conn:
            return ("PONG", True) if conn.ping() else ("no PONG", False)
    except (redis.RedisError, OSError) as error:
        return f"not answering ({type(error).__name__})", False


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
             for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def report(settings: StackSettings) -> tuple[str, bool]:
    """The status table and whether everything is well."""
    states = instance_states(settings)
    redis_answer, redis_ok = redis_state(settings)
    rows = [HEADER, *((s.name, s.address, s.healthz, s.haproxy, s.check, s.sessions, s.sockets)
                      for s in states)]
    front = (f"front door http://127.0.0.1:{settings.http_port}" if settings.starts_haproxy
             else "no front door on this host")
    lines = [f"chatfleet: {settings.instances} instances, {front}", "", table(rows), "",
             f"redis {settings.effective_redis_url}: {redis_answer}"]
    well = redis_ok and all(s.ready and s.haproxy in ("UP", "-") for s in states)
    return "\n".join(lines), well


def main() -> None:
    text, well = report(StackSettings.from_env())
    print(text)
    sys.exit(0 if well else 1)


if __name__ == "__main__":
    main()
