"""idle: what an idle logged-in WebSocket costs in memory and CPU, chatfleet and the socketio peer.

    python -m bench.idle                # 10,000 sockets over 2 instances via HAProxy, both servers
    python -m bench.idle --sockets 2000 --window 60 --servers chatfleet --direct

For each server (bench/targets.py: chatfleet's stack with the rate limit
off, then the python-socketio peer), one after the other: measure an empty
baseline, open K WebSockets from several 127.0.0.x source addresses (one
address has only the ephemeral port range), let them idle, and print per
role (app = the chat processes; HAProxy; Redis) the RSS before and after,
RSS per socket, and the CPU over a measured window minus the baseline's.
Then both servers side by side with the ratio.

A chatfleet socket is its own login: one keep-alive connection does
`GET /`, `POST /login` and the upgrade, and waits for the lobby's presence.
Logins share user names in groups (`--sockets-per-user`; the stack gets
CHAT_MAX_SOCKETS_PER_LOGIN and CHAT_MAX_LOGINS_PER_USER to match): every
user's first socket announces `joined` to the whole lobby, so K distinct
names would cost K² frames to open. A socketio socket connects as its own
user and joins a room of its own (the peer announces every join to the
whole room).

Both servers keep every socket alive every 25 s (chatfleet: CHAT_PING_INTERVAL=25
here, twice its default, one timer per process, every fourth a ping and the
rest one-way heartbeats; python-socketio: a ping every 25 s, its default),
and chatfleet checks every login's session every 120 s
(CHAT_SESSION_CHECK_SECONDS), so the default window is 120 s: about five
keep-alives per socket and one session-check pass. A shorter window still sees
the keep-alives but may miss (or catch) the check pass. `--ping-interval 5`
with 10,000 sockets sends 2,000 keep-alives a second, as 100,000 sockets do
at the default 50 s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
from dataclasses import dataclass, field

from bench.procs import bench_target, cpu_of, roles, rss_bytes
from bench.rawws import ChatClient, Connection, HttpError, source_addresses
from bench.sioclient import SioSocket, open_sio
from bench.targets import Target
from stack.limits import raise_nofile

# Connections being set up at once: enough to keep both instances busy,
# few enough that no listen backlog overflows (a dropped SYN costs 1 s).
OPEN_CONCURRENCY = 200
# Descriptors HAProxy keeps for itself (listeners, checks, its admin socket, logs).
HAPROXY_FD_RESERVE = 200
# Sockets per source address: well inside one address's ephemeral port range.
SOCKETS_PER_SOURCE = 5_000
# After the last socket opened, wait this long for join notices to drain and
# allocators to settle before reading RSS (--settle).
SETTLE_SECONDS = 5.0
READY_TIMEOUT_SECONDS = 60.0
# A socket refused while the instances are busy (a 503 when a health check
# timed out) is tried again after a pause, a few times.
OPEN_TRIES = 3
RETRY_PAUSE_SECONDS = 1.0
PRESENCE_PREFIX = '{"type":"presence","room":"lobby"'


@dataclass
class IdleSocket:
    """One idle chatfleet client: its connection, whether its lobby join finished."""

    client: ChatClient
    conn: Connection | None = None
    frames: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def on_text(self, text: str) -> None:
        self.frames += 1
        if text.startswith(PRESENCE_PREFIX):
            self.ready.set()

    async def open(self, user: str) -> None:
        self.conn = await self.client.open(self.on_text)
        await self.client.login(user)
        await self.client.upgrade()
        await asyncio.wait_for(self.ready.wait(), READY_TIMEOUT_SECONDS)

    @property
    def open_now(self) -> bool:
        return self.ready.is_set() and self.conn is not None and not self.conn.closed.done()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@dataclass
class SioIdleSocket:
    """One idle Socket.IO client: connected as its user and joined to a room of its own.

    A room of its own, not one shared lobby: the peer announces every join to
    the whole room, so K sockets in one room would cost K² frames to open.
    """

    url: str
    source: str
    ws: SioSocket | None = None
    frames: int = 0

    def on_event(self, payload: bytes) -> None:
        self.frames += 1

    async def open(self, user: str) -> None:
        self.close()
        self.ws = await open_sio(self.url, user, user, self.on_event, self.source)

    @property
    def open_now(self) -> bool:
        return self.ws is not None and not self.ws.gone.done()

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


AnySocket = IdleSocket | SioIdleSocket


@dataclass
class RoleRow:
    role: str
    rss_before: int
    rss_after: int
    sockets: int
    cores: float  # CPU over the window, in cores
    baseline_cores: float

    @property
    def kb_per_socket(self) -> float:
        return (self.rss_after - self.rss_before) / max(1, self.sockets) / 1024

    @property
    def socket_cores(self) -> float:
        return self.cores - self.baseline_cores


@dataclass
class IdleResult:
    server: str
    sockets_wanted: int
    sockets_open: int
    sockets_still_open: int
    open_seconds: float
    window_seconds: float
    rows: list[RoleRow]
    client_cores: float


def proxied_count(args: argparse.Namespace, nofile: int) -> int:
    """How many sockets go through HAProxy: all, unless its fd limit cannot hold them.

    HAProxy takes two descriptors per connection and sizes its maxconn from
    the limit it inherits; the rest of the sockets go to the instances directly.
    """
    if args.direct:
        return 0
    return max(0, min(int(args.sockets), (nofile - HAPROXY_FD_RESERVE) // 2))


def plan_sockets(args: argparse.Namespace, target: Target,
                 proxied: int) -> list[tuple[AnySocket, str]]:
    """Each socket's client (via HAProxy for the first `proxied`, else direct) and user name."""
    sources = source_addresses(max(1, math.ceil(args.sockets / SOCKETS_PER_SOURCE)))
    plan: list[tuple[AnySocket, str]] = []
    for i in range(args.sockets):
        # Consecutive sockets go to different instances, so all of them work
        # while the sockets open; a name's sockets stay on one instance.
        instance = i % args.instances
        source = sources[i % len(sources)]
        direct = i >= proxied
        url = target.instance_urls[instance] if direct else target.url
        if target.protocol == "socketio":
            # No stickiness in the peer's HAProxy: round-robin spreads the sockets.
            plan.append((SioIdleSocket(url, source), f"idle{i}"))
            continue
        group = i // args.instances // args.sockets_per_user
        pin = "" if direct else f"chat{instance + 1}"
        plan.append((IdleSocket(ChatClient(url, source, pin)), f"idle{instance + 1}x{group}"))
    return plan


async def open_all(plan: list[tuple[AnySocket, str]]) -> None:
    """Open every planned socket, OPEN_CONCURRENCY at a time (failures are printed)."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(sock: AnySocket, user: str) -> bool:
        async with gate:
            for attempt in range(OPEN_TRIES):
                try:
                    await sock.open(user)
                    return True
                except (OSError, TimeoutError, HttpError, ConnectionError) as error:
                    if attempt == OPEN_TRIES - 1:
                        print(f"  a socket of {user} failed: {type(error).__name__}: {error}")
                    await asyncio.sleep(RETRY_PAUSE_SECONDS)
            return False

    await asyncio.gather(*(one(s, u) for s, u in plan))


def rss_of(pids: list[int]) -> int:
    return sum(rss_bytes(pid) for pid in pids)


async def cores_over(pids_by_role: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """Each role's CPU over `seconds` of waiting, in cores; "client" is this process."""
    before = {role: cpu_of(pids) for role, pids in pids_by_role.items()}
    client_before = sum(os.times()[:2])
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    cores = {role: (cpu_of(pids) - before[role]) / elapsed
             for role, pids in pids_by_role.items()}
    cores["client"] = (sum(os.times()[:2]) - client_before) / elapsed
    return cores


async def measure(args: argparse.Namespace, target: Target, nofile: int) -> IdleResult:
    by_role = roles(target)
    proxied = proxied_count(args, nofile)
    if proxied < args.sockets:
        print(f"{proxied} sockets through HAProxy, {args.sockets - proxied} to the instances "
              f"directly (fd limit {nofile}: HAProxy needs two per connection)", flush=True)
    print(f"baseline: {args.baseline:.0f} s with no sockets", flush=True)
    baseline = await cores_over(by_role, args.baseline)
    rss_before = {role: rss_of(pids) for role, pids in by_role.items()}
    plan = plan_sockets(args, target, proxied)
    started = time.monotonic()
    await open_all(plan)
    open_seconds = time.monotonic() - started
    opened = sum(1 for sock, _ in plan if sock.open_now)
    print(f"opened {opened}/{args.sockets} sockets in {open_seconds:.1f} s; "
          f"settling {args.settle:.0f} s", flush=True)
    await asyncio.sleep(args.settle)
    rss_after = {role: rss_of(pids) for role, pids in by_role.items()}
    print(f"measuring {args.window:.0f} s of idle sockets "
          f"(keep-alives every {args.ping_interval:g} s)",
          flush=True)
    cores = await cores_over(by_role, args.window)
    still_open = sum(1 for sock, _ in plan if sock.open_now)
    through_proxy = sum(1 for sock, _ in plan[:proxied] if sock.open_now)
    rows = [RoleRow(role, rss_before[role], rss_after[role],
                    through_proxy if role == "haproxy" else opened, cores[role], baseline[role])
            for role in by_role]
    for sock, _ in plan:
        sock.close()
    return IdleResult(target.protocol, args.sockets, opened, still_open, open_seconds, args.window,
                      rows, cores["client"])


def run(args: argparse.Namespace) -> list[IdleResult]:
    """For each server kind: start it, measure, stop it. Print each and the comparison."""
    nofile = raise_nofile()
    results = []
    for kind in args.servers:
        # Many sockets (each its own login) per user name: `joined` once per
        # name, not per socket; a login past the user's cap would end the oldest.
        # A keep-alive every 25 s by default, python-socketio's ping interval,
        # not chatfleet's default 50 s. A shorter one measures what they cost.
        env = {"CHAT_MAX_SOCKETS_PER_LOGIN": str(args.sockets_per_user),
               "CHAT_MAX_LOGINS_PER_USER": str(args.sockets_per_user),
               "CHAT_PING_INTERVAL": f"{args.ping_interval:g}"}
        with bench_target(kind, args.instances, env if kind == "chatfleet" else None) as target:
            result = asyncio.run(measure(args, target, nofile))
        print_result(result)
        results.append(result)
    if len(results) > 1:
        print_comparison(results)
    return results


def comparison_lines(r: IdleResult) -> dict[str, float]:
    """The figures the comparison table puts side by side."""
    lines = {f"{row.role} KB/socket": row.kb_per_socket for row in r.rows}
    lines["all servers % core"] = 100 * sum(row.socket_cores for row in r.rows)
    return lines


def print_comparison(results: list[IdleResult]) -> None:
    base = results[0]
    columns = [comparison_lines(r) for r in results]
    print(f"\n{'per idle socket':<20} " + " ".join(f"{r.server:>10}" for r in results)
          + "".join(f" {r.server + '/' + base.server:>20}" for r in results[1:]))
    for name, value in columns[0].items():
        ratios = "".join(f" {c[name] / value if value else float('nan'):>20.2f}"
                         for c in columns[1:])
        print(f"{name:<20} " + " ".join(f"{c[name]:>10.2f}" for c in columns) + ratios)


def print_result(r: IdleResult) -> None:
    print(f"\n{r.server}: {r.sockets_open} idle sockets open ({r.sockets_still_open} still open "
          f"after the {r.window_seconds:.0f} s window), opened in {r.open_seconds:.1f} s")
    print(f"{'role':<8} {'sockets':>7} {'RSS before MB':>13} {'RSS after MB':>12} "
          f"{'KB/socket':>9} {'cores':>6} {'baseline':>8} {'sockets % core':>14}")
    for row in r.rows:
        print(f"{row.role:<8} {row.sockets:>7} {row.rss_before / 2**20:>13.1f} "
              f"{row.rss_after / 2**20:>12.1f} "
              f"{row.kb_per_socket:>9.2f} {row.cores:>6.3f} {row.baseline_cores:>8.3f} "
              f"{100 * row.socket_cores:>14.2f}")
    total = sum(row.socket_cores for row in r.rows)
    print(f"all servers: {100 * total:.2f}% of a core for {r.sockets_open} idle sockets; "
          f"load side {100 * r.client_cores:.2f}% of a core", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--sockets-per-user", type=int, default=250,
                        help="sockets (each its own login) sharing one user name")
    parser.add_argument("--window", type=float, default=120.0,
                        help="seconds of idle CPU measured (session checks every 120 s)")
    parser.add_argument("--ping-interval", type=float, default=25.0,
                        help="chatfleet's CHAT_PING_INTERVAL (python-socketio pings every 25 s)")
    parser.add_argument("--baseline", type=float, default=30.0,
                        help="seconds of empty-stack CPU measured first")
    parser.add_argument("--settle", type=float, default=SETTLE_SECONDS,
                        help="seconds between the last socket opening and reading RSS")
    parser.add_argument("--servers", default="chatfleet,socketio", type=lambda v: v.split(","),
                        help="which servers to measure, one after the other (bench/targets.py)")
    parser.add_argument("--direct", action="store_true",
                        help="connect to the instance ports, not through HAProxy")
    return parser.parse_args(argv)


def main() -> None:
    run(parse_args())


if __name__ == "__main__":
    main()
