"""idle: what an idle logged-in WebSocket costs chatfleet in memory and CPU.

    python -m bench.idle                          # 10,000 sockets over 2 instances, via HAProxy
    python -m bench.idle --sockets 2000 --window 60 --direct

Starts its own stack (rate limit off), measures an empty baseline, then opens
K logged-in WebSockets (each its own login, on one keep-alive connection
that logs in and then upgrades; from several 127.0.0.x source addresses so
the ephemeral port range is no limit). Prints, per role (chat processes,
HAProxy, Redis): RSS before and after, RSS per socket, and the CPU over a
measured window, with the empty baseline's CPU taken off.

The server pings every socket every 25 s (a constant in chat_server.py, not
configurable), and checks every login's session every 120 s
(CHAT_SESSION_CHECK_SECONDS), so the default window is 120 s: about five
pings per socket and exactly one session-check pass. A shorter window is
cheaper and still sees the pings, but may miss (or catch) the check pass.
Users share names in groups (`--sockets-per-user`; the stack gets
CHAT_MAX_SOCKETS_PER_USER to match): every user's first socket announces
`joined` to the whole lobby and every join gets the lobby's user list, so
K distinct names would cost K² frames while the sockets open. Each socket
is still its own login with its own session.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
from dataclasses import dataclass, field

from bench.procs import bench_target, cpu_of, raise_nofile, roles, rss_bytes
from bench.rawws import ChatClient, Connection, HttpError, source_addresses
from bench.targets import Target

# Connections being set up at once: enough to keep both instances busy,
# few enough that no listen backlog overflows (a dropped SYN costs 1 s).
OPEN_CONCURRENCY = 200
# Sockets per source address: well inside one address's ephemeral port range.
SOCKETS_PER_SOURCE = 5_000
# After the last socket opened, wait this long for join notices to drain and
# allocators to settle before reading RSS.
SETTLE_SECONDS = 5.0
READY_TIMEOUT_SECONDS = 60.0
# A socket refused while the instances are busy (a 503 when a health check
# timed out) is tried again after a pause, a few times.
OPEN_TRIES = 3
RETRY_PAUSE_SECONDS = 1.0
PRESENCE_PREFIX = '{"type":"presence","room":"lobby"'


@dataclass
class IdleSocket:
    """One idle client: its connection, whether its lobby join finished, frames seen."""

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
        return self.conn is not None and not self.conn.closed.done()


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


def plan_sockets(args: argparse.Namespace, target: Target) -> list[tuple[IdleSocket, str]]:
    """Each socket's client (pinned or direct, with a source address) and user name."""
    sources = source_addresses(max(1, math.ceil(args.sockets / SOCKETS_PER_SOURCE)))
    plan = []
    for i in range(args.sockets):
        # Consecutive sockets go to different instances, so all of them work
        # while the sockets open; a name's sockets stay on one instance.
        instance = i % args.instances
        group = i // args.instances // args.sockets_per_user
        if args.direct:
            client = ChatClient(target.instance_urls[instance], sources[i % len(sources)])
        else:
            client = ChatClient(target.url, sources[i % len(sources)], pin=f"chat{instance + 1}")
        plan.append((IdleSocket(client), f"idle{instance + 1}x{group}"))
    return plan


async def open_all(plan: list[tuple[IdleSocket, str]]) -> None:
    """Open every planned socket, OPEN_CONCURRENCY at a time (failures are printed)."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(sock: IdleSocket, user: str) -> bool:
        async with gate:
            for attempt in range(OPEN_TRIES):
                try:
                    await sock.open(user)
                    return True
                except (OSError, TimeoutError, HttpError) as error:
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


async def measure(args: argparse.Namespace, target: Target) -> IdleResult:
    by_role = roles(target)
    print(f"baseline: {args.baseline:.0f} s with no sockets", flush=True)
    baseline = await cores_over(by_role, args.baseline)
    rss_before = {role: rss_of(pids) for role, pids in by_role.items()}
    plan = plan_sockets(args, target)
    started = time.monotonic()
    await open_all(plan)
    open_seconds = time.monotonic() - started
    opened = sum(1 for sock, _ in plan if sock.ready.is_set() and sock.open_now)
    print(f"opened {opened}/{args.sockets} sockets in {open_seconds:.1f} s; "
          f"settling {SETTLE_SECONDS:.0f} s", flush=True)
    await asyncio.sleep(SETTLE_SECONDS)
    rss_after = {role: rss_of(pids) for role, pids in by_role.items()}
    print(f"measuring {args.window:.0f} s of idle sockets (pings every 25 s)", flush=True)
    cores = await cores_over(by_role, args.window)
    still_open = sum(1 for sock, _ in plan if sock.open_now)
    rows = [RoleRow(role, rss_before[role], rss_after[role], opened, cores[role], baseline[role])
            for role in by_role]
    for sock, _ in plan:
        if sock.conn is not None:
            sock.conn.close()
    return IdleResult("chatfleet", args.sockets, opened, still_open, open_seconds, args.window,
                      rows, cores["client"])


def run(args: argparse.Namespace) -> IdleResult:
    """Start a stack, measure, stop it; print and return the result."""
    raise_nofile()
    # Thousands of sockets per user name: `joined` once per name, not per socket.
    env = {"CHAT_MAX_SOCKETS_PER_USER": str(args.sockets_per_user)}
    with bench_target("chatfleet", args.instances, env) as target:
        result = asyncio.run(measure(args, target))
    print_result(result)
    return result


def print_result(r: IdleResult) -> None:
    print(f"\n{r.server}: {r.sockets_open} idle sockets open ({r.sockets_still_open} still open "
          f"after the {r.window_seconds:.0f} s window), opened in {r.open_seconds:.1f} s")
    print(f"{'role':<8} {'RSS before MB':>13} {'RSS after MB':>12} {'KB/socket':>9} "
          f"{'cores':>6} {'baseline':>8} {'sockets % core':>14}")
    for row in r.rows:
        print(f"{row.role:<8} {row.rss_before / 2**20:>13.1f} {row.rss_after / 2**20:>12.1f} "
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
                        help="seconds of idle CPU measured (pings every 25 s, checks every 120 s)")
    parser.add_argument("--baseline", type=float, default=30.0,
                        help="seconds of empty-stack CPU measured first")
    parser.add_argument("--direct", action="store_true",
                        help="connect to the instance ports, not through HAProxy")
    return parser.parse_args(argv)


def main() -> None:
    run(parse_args())


if __name__ == "__main__":
    main()
