"""logins: what password logins cost one chat process, and what they do to its chat.

    python -m bench.logins                      # own stack: 2 processes, accounts mode
    python -m bench.logins --logins 300 --seconds 10 --password-threads 2

On a chatfleet stack started here (bench/targets.py: accounts mode, the chat
rate limit off, everything on loopback), at instance 1's own port:

1. Logins as fast as they go. `--accounts` accounts are signed up first
   (through HAProxy, not timed), then `--logins` logins with the right
   password, `--concurrency` in flight. Logins/s (302s over the run's wall
   time), p50/p99 of a 302's latency (TCP connect to answer), and the
   process's cores (user + system CPU of every thread, Argon2id's pool
   included, from /proc/<pid>/stat over the run).
2. Chat delivery on that process, idle and under logins. `--listeners`
   WebSocket clients, logged in with accounts of their own, are in one room
   on instance 1; one publisher there sends `--chat-rate` msg/s stamped with
   time.monotonic_ns(), and each listener measures the delivery latency.
   Phase A: nothing else. Phase B: the same while another process (so the
   chat clients' loop does no login work) fires `--login-rate` logins/s at
   instance 1, open loop (each at its due time, answered or not). Chat p50/p99
   of each phase, the p99 difference (issue 15: at most 10 ms above idle),
   and phase B's answers: 302 logged in, 503 the password pool's queue was
   full (Retry-After), 429 throttled, 0 no answer.

Logins go round-robin over the accounts and over 16 loopback source
addresses: the login throttle writes each attempt down as a failure until
its password checks out, so many attempts in flight for one name or one
address would be refused (429) although every password is right. The
default sizes keep every account under the 30 logins a user may hold at
once (past it, each login also ends the user's oldest).

Not a test: it measures and asserts nothing. The clients run on the same
machine as the server, so on a small box their CPU is part of what the chat
process competes with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from bench.procs import bench_target, cpu_seconds
from bench.tally import percentile
from chatclient import ChatSocket, HttpSession

ROOM = "logins-bench"
# Each login's client address, round-robin (any of 127/8 is loopback).
SOURCES = [f"127.0.0.{n}" for n in range(10, 26)]
SIGNUP_PARALLEL = 4
CONNECT_TIMEOUT = 10.0
WARM_UP_SECONDS = 1.0
DRAIN_POLL_SECONDS = 0.05
# Phase B starts this long after the login process said it is up.
DRIVER_LEAD_SECONDS = 0.5
ISSUE_P99_BUDGET_MS = 10.0


@dataclass
class Logins:
    """A run of logins: answers by status (0: none), the 302s' latencies."""

    statuses: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cores: float = math.nan  # the chat process's, over the run

    def add(self, code: int, ms: float) -> None:
        self.statuses[code] += 1
        if code == 302:
            self.latencies_ms.append(ms)

    @property
    def per_second(self) -> float:
        return self.statuses[302] / self.seconds if self.seconds else math.nan


@dataclass
class ChatPhase:
    name: str
    login_rate: float  # offered to the process meanwhile
    sent: int
    expected: int  # sent x listeners
    latencies_ms: list[float]
    cores: float
    logins: Logins | None = None


@dataclass
class Result:
    instance_pid: int
    fast: Logins
    phases: list[ChatPhase]


# -- logins -------------------------------------------------------------------------


async def xsrf_token(url: str) -> str:
    http = HttpSession(url)
    try:
        return await http.xsrf()
    finally:
        http.close()


async def login_once(url: str, xsrf: str, name: str, password: str,
                     source: str) -> tuple[int, float]:
    """One login on a fresh connection: its status (0: no answer) and milliseconds."""
    http = HttpSession(url, source_address=source)
    http.cookies["_xsrf"] = xsrf  # any session may use this token: no GET first
    started = time.monotonic()
    try:
        answer = await http.login(name, password)
        return answer.code, (time.monotonic() - started) * 1000
    except Exception:  # refused, reset, timed out: nothing to time
        return 0, (time.monotonic() - started) * 1000
    finally:
        http.close()


async def sign_up(url: str, names: list[str], password: str) -> None:
    pending = iter(names)

    async def worker() -> None:
        for name in pending:
            http = HttpSession(url)
            try:
                answer = await http.signup(name, password)
            finally:
                http.close()
            if answer.code != 302:
                raise RuntimeError(f"signup of {name} answered {answer.code}")

    await asyncio.gather(*(worker() for _ in range(SIGNUP_PARALLEL)))


def rotation(names: list[str], count: int) -> Iterator[tuple[str, str]]:
    """(account, source address) for `count` logins, round-robin over both."""
    for i in range(count):
        yield names[i % len(names)], SOURCES[i % len(SOURCES)]


async def fast_logins(url: str, pid: int, names: list[str], password: str, count: int,
                      concurrency: int) -> Logins:
    """`count` logins, `concurrency` in flight, as fast as the process answers."""
    xsrf = await xsrf_token(url)
    result = Logins()
    pending = rotation(names, count)

    async def worker() -> None:
        for name, source in pending:
            result.add(*await login_once(url, xsrf, name, password, source))

    cpu, started = cpu_seconds(pid), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.monotonic() - started
    result.cores = (cpu_seconds(pid) - cpu) / result.seconds
    return result


def paced_logins(url: str, xsrf: str, names: list[str], password: str, rate: float,
                 seconds: float, start_at: float) -> Logins:
    """In a process of its own: `rate` logins/s for `seconds` from `start_at`
    (time.monotonic, one clock for the machine), each at its due time."""
    return asyncio.run(_paced(url, xsrf, names, password, rate, seconds, start_at))


async def _paced(url: str, xsrf: str, names: list[str], password: str, rate: float,
                 seconds: float, start_at: float) -> Logins:
    result = Logins()

    async def one(name: str, source: str) -> None:
        result.add(*await login_once(url, xsrf, name, password, source))

    tasks = []
    for i, (name, source) in enumerate(rotation(names, int(rate * seconds))):
        await asyncio.sleep(max(0.0, start_at + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(name, source)))
    await asyncio.gather(*tasks)
    result.seconds = time.monotonic() - start_at
    return result


# -- chat -----------------------------------------------------------------------------


async def chat_user(url: str, name: str, password: str) -> ChatSocket:
    """A new account, logged in (signup does that), its socket joined to ROOM."""
    http = HttpSession(url)
    try:
        answer = await http.signup(name, password)
        if answer.code != 302:
            raise RuntimeError(f"signup of {name} answered {answer.code}")
        sock = await ChatSocket.connect(http, timeout=CONNECT_TIMEOUT)
    finally:
        http.close()
    await sock.next_of("hello", timeout=CONNECT_TIMEOUT)
    await sock.send({"type": "join", "room": ROOM})
    await sock.next_of("presence", timeout=CONNECT_TIMEOUT, room=ROOM)
    return sock


async def read_chats(sock: ChatSocket, latencies: dict[str, list[float]] | None) -> None:
    """Every chat in ROOM, "<phase> <send ns>": its latency, filed under its phase.
    With no `latencies` (the publisher's own socket), only read, so it never backs up."""
    while (raw := await sock.conn.read_message()) is not None:
        if latencies is None:
            continue
        now = time.monotonic_ns()
        frame = json.loads(raw)
        if frame.get("type") == "chat" and frame.get("room") == ROOM:
            phase, _, sent = frame["text"].partition(" ")
            latencies[phase].append((now - int(sent)) / 1e6)


async def chat_phase(name: str, publisher: ChatSocket, latencies: dict[str, list[float]],
                     args: argparse.Namespace, pid: int, seconds: float,
                     start_at: float = 0.0, login_rate: float = 0.0) -> ChatPhase:
    """Publish `args.chat_rate` msg/s for `seconds` from `start_at`; wait for the deliveries."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    cpu, started = cpu_seconds(pid), time.monotonic()
    count = int(args.chat_rate * seconds)
    for i in range(count):
        await asyncio.sleep(max(0.0, started + i / args.chat_rate - time.monotonic()))
        await publisher.send({"type": "chat", "room": ROOM,
                              "text": f"{name} {time.monotonic_ns()}"})
    cores = (cpu_seconds(pid) - cpu) / (time.monotonic() - started)
    expected = count * args.listeners
    for _ in range(math.ceil(args.drain / DRAIN_POLL_SECONDS)):  # late deliveries
        if len(latencies[name]) >= expected:
            break
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    return ChatPhase(name, login_rate, count, expected, latencies[name], cores)


async def chat_phases(args: argparse.Namespace, url: str, pid: int, names: list[str],
                      password: str, pool: ProcessPoolExecutor) -> list[ChatPhase]:
    """Phase A (chat alone), then phase B (chat and paced logins), same sockets."""
    socks = [await chat_user(url, f"speaker{i}" if i == 0 else f"listener{i}", password)
             for i in range(args.listeners + 1)]
    publisher, listeners = socks[0], socks[1:]
    latencies: dict[str, list[float]] = defaultdict(list)
    readers = [asyncio.create_task(read_chats(publisher, None))]
    readers += [asyncio.create_task(read_chats(s, latencies)) for s in listeners]
    try:
        await chat_phase("warm-up", publisher, latencies, args, pid, WARM_UP_SECONDS)
        idle = await chat_phase("A", publisher, latencies, args, pid, args.seconds)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, os.getpid)  # the login process is up
        xsrf = await xsrf_token(url)
        start_at = time.monotonic() + DRIVER_LEAD_SECONDS
        driver = loop.run_in_executor(pool, paced_logins, url, xsrf, names, password,
                                      args.login_rate, args.seconds, start_at)
        busy = await chat_phase("B", publisher, latencies, args, pid, args.seconds,
                                start_at, args.login_rate)
        busy.logins = await driver
        return [idle, busy]
    finally:
        for task in readers:
            task.cancel()
        for sock in socks:
            sock.close()


# -- the run -------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, front: str, url: str, pid: int,
                  pool: ProcessPoolExecutor) -> Result:
    password = "bench-" + secrets.token_urlsafe(12)
    names = [f"login{i}" for i in range(args.accounts)]
    await sign_up(front, names, password)
    fast = await fast_logins(url, pid, names, password, args.logins, args.concurrency)
    phases = await chat_phases(args, url, pid, names, password, pool)
    return Result(pid, fast, phases)


def run(args: argparse.Namespace) -> Result:
    """Start the stack, measure, stop everything; print the tables and return the figures."""
    env = {"CHAT_PASSWORD_THREADS": str(args.password_threads)}
    print(f"machine: {os.cpu_count()} cores, load average {load_average()} at the start "
          "(the clients share it with the server)", flush=True)
    with bench_target("chatfleet", args.instances, env=env, auth="accounts") as target, \
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pid = target.instance_pids()[0]
        result = asyncio.run(measure(args, target.url, target.instance_urls[0], pid, pool))
    print(render(result, args), flush=True)
    print(f"load average at the end: {load_average()}", flush=True)
    return result


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q):.1f}" if values else "-"


def render(result: Result, args: argparse.Namespace) -> str:
    fast = result.fast
    idle, busy = result.phases
    lines = [
        f"\nlogins at instance 1 (pid {result.instance_pid}, {args.password_threads} "
        f"password thread(s), {args.accounts} accounts), latency of the 302s",
        "",
        "| run | tries | 302 | 503 | 429 | other | 302/s | p50 ms | p99 ms | process cores |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    runs = [(f"as fast as it goes, {args.concurrency} in flight", fast)]
    if busy.logins is not None:
        runs.append((f"phase B, paced {args.login_rate:g}/s", busy.logins))
    for label, logins in runs:
        s = logins.statuses
        other = sum(n for code, n in s.items() if code not in (302, 503, 429))
        cores = busy.cores if logins is busy.logins else logins.cores
        lines.append(f"| {label} | {sum(s.values())} | {s[302]} | {s[503]} | {s[429]} | "
                     f"{other} | {logins.per_second:.1f} | {ms(logins.latencies_ms, 0.5)} | "
                     f"{ms(logins.latencies_ms, 0.99)} | {cores:.2f} |")
    lines += [
        "",
        f"chat on instance 1: {args.listeners} listeners in one room, "
        f"{args.chat_rate:g} msg/s, {args.seconds:g} s per phase",
        "",
        "| phase | logins/s offered | sent | delivered | lost | p50 ms | p99 ms | max ms "
        "| process cores |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in result.phases:
        got = len(phase.latencies_ms)
        worst = f"{max(phase.latencies_ms):.1f}" if got else "-"
        lines.append(f"| {phase.name} | {phase.login_rate:g} | {phase.sent} | {got} | "
                     f"{max(0, phase.expected - got)} | {ms(phase.latencies_ms, 0.5)} | "
                     f"{ms(phase.latencies_ms, 0.99)} | {worst} | {phase.cores:.2f} |")
    if idle.latencies_ms and busy.latencies_ms:
        diff = percentile(busy.latencies_ms, 0.99) - percentile(idle.latencies_ms, 0.99)
        verdict = "within" if diff <= ISSUE_P99_BUDGET_MS else "over"
        lines.append(f"\nchat p99, B - A: {diff:+.1f} ms ({verdict} issue 15's "
                     f"+{ISSUE_P99_BUDGET_MS:g} ms)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--instances", type=int, default=2, help="chat processes")
    parser.add_argument("--password-threads", type=int, default=1,
                        help="each process's Argon2id pool (CHAT_PASSWORD_THREADS)")
    parser.add_argument("--accounts", type=int, default=100, help="accounts logged in to")
    parser.add_argument("--logins", type=int, default=600, help="logins of part 1")
    parser.add_argument("--concurrency", type=int, default=8, help="in flight in part 1")
    parser.add_argument("--listeners", type=int, default=4)
    parser.add_argument("--chat-rate", type=float, default=50.0, help="msg/s per phase")
    parser.add_argument("--login-rate", type=float, default=50.0, help="logins/s in phase B")
    parser.add_argument("--seconds", type=float, default=20.0, help="per chat phase")
    parser.add_argument("--drain", type=float, default=3.0,
                        help="after a phase, wait at most this long for late deliveries")
    return parser.parse_args(argv)


def main() -> None:
    run(parse_args())


if __name__ == "__main__":
    main()
