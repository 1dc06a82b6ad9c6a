"""storm: M clients lose their instance at once; how fast are they all back, and is anything lost?

    python -m bench.storm                       # 2,000 clients on chat1, kill -9 chat1
    python -m bench.storm --clients 500 --rate 10

Starts its own stack (rate limit off). M clients log in through HAProxy, all
pinned to instance 1 by HAProxy's `chatfleet_server` cookie, and sit in the
lobby; a publisher pinned to instance 2 sends `--rate` messages a second
(with a `cid`, and writes down every acknowledged id). Then instance 1 gets
SIGKILL. Each client reconnects as static/chat.js does (full-jitter backoff
from 0.5 s, `GET /session`, then `/ws?after=<last id>`), and counts as
resumed when the first chat frame arrives on its new socket. After everyone
is back, the publisher stops and each client's received ids are compared
with the publisher's acknowledged ids after the point where the client
joined: a missing one is lost.

Printed: time from the kill until 99% and 100% are resumed, the peak of
WebSocket handshakes completed in any one second, two views of Redis's
session reads during the storm, and messages lost, repeated or reordered.
Session reads are GETEX (the store's one read): "GETEX exec p99" is Redis's
own execution time of every GETEX in the storm, from SLOWLOG with the
threshold at 0 (switched on just before the kill, restored after);
"probe RTT p99" is a GETEX this tool sends every 10 ms on its own
connection, so it includes waiting in Redis's single-threaded queue behind
the storm's other commands. Neither includes the wait for a pooled
connection inside an instance.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as PipeEnd
from multiprocessing.synchronize import Event as EventType

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from bench.drill_client import FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS, stream_key
from bench.procs import bench_target, cpu_of, raise_nofile, roles
from bench.rawws import ChatClient, HttpError
from bench.targets import Target

# Clients logging in at once before the storm (keeps listen backlogs from overflowing).
OPEN_CONCURRENCY = 200
READY_TIMEOUT_SECONDS = 60.0
CHAT_PREFIX = '{"type":"chat","id":"'
PRESENCE_PREFIX = '{"type":"presence","room":"lobby"'
ACK_PREFIX = '{"type":"ack"'
# The publisher runs this long before the kill, so every client is receiving.
WARMUP_SECONDS = 2.0
# After the last client is back, keep publishing this long (live delivery on
# the new sockets), then wait at most DRAIN_SECONDS for the last message.
TAIL_SECONDS = 2.0
DRAIN_SECONDS = 20.0
PROBE_INTERVAL_SECONDS = 0.01
POLL_SECONDS = 0.05
PROBE_KEY = "bench:storm:probe"
# Room for every command of the storm in SLOWLOG (entries are about 200 bytes).
SLOWLOG_ENTRIES = 1_000_000


@dataclass
class Storm:
    """What all clients share: the kill instant, handshake times, the stop flag."""

    killed_at: float | None = None
    handshakes: list[float] = field(default_factory=list)
    stopping: bool = False
    failures: Counter[str] = field(default_factory=Counter)


@dataclass
class StormClient:
    """A lobby member that reconnects like static/chat.js and records every chat id."""

    client: ChatClient
    user: str
    storm: Storm
    ids: list[str] = field(default_factory=list)
    last: str | None = None
    joined_at_key: tuple[int, int] = (0, 0)  # the last id it had when it became ready
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    displaced_at: float | None = None
    resumed_at: float | None = None
    waiting_resume: bool = False
    logged_in: bool = False

    def on_text(self, text: str) -> None:
        if text.startswith(CHAT_PREFIX):
            msg_id = text[len(CHAT_PREFIX):text.index('"', len(CHAT_PREFIX))]
            self.ids.append(msg_id)
            self.last = msg_id
            if self.waiting_resume:
                self.waiting_resume = False
                self.resumed_at = time.monotonic()
        elif text.startswith(PRESENCE_PREFIX) and not self.ready.is_set():
            self.joined_at_key = stream_key(self.last) if self.last else (0, 0)
            self.ready.set()

    async def connect_once(self) -> asyncio.Future[None]:
        """Log in (first time) or probe, then upgrade; the future resolves on close."""
        conn = await self.client.open(self.on_text)
        if self.logged_in:
            await self.client.probe()
        else:
            await self.client.login(self.user)
            self.logged_in = True
        await self.client.upgrade(self.last)
        if self.storm.killed_at is not None:
            self.storm.handshakes.append(time.monotonic())
        return conn.closed

    async def live(self) -> None:
        """Stay connected until the storm stops, backing off like chat.js between tries."""
        failures = 0
        while not self.storm.stopping:
            try:
                closed = await self.connect_once()
                failures = 0
                await closed
                if self.storm.stopping:
                    return
                if self.displaced_at is None and self.storm.killed_at is not None:
                    self.displaced_at = time.monotonic()
                    self.waiting_resume = True
            except (OSError, TimeoutError, HttpError) as error:
                failures += 1
                self.storm.failures[str(error) if isinstance(error, HttpError)
                                    else type(error).__name__] += 1
            await asyncio.sleep(random.uniform(
                0, min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** failures)))

    def close(self) -> None:
        if self.client.conn is not None:
            self.client.conn.close()


@dataclass
class Publisher:
    """Sends chats with a cid at a steady rate and records the acknowledged ids."""

    client: ChatClient
    acked: list[str] = field(default_factory=list)
    errors: int = 0
    sent: int = 0

    def on_text(self, text: str) -> None:
        if text.startswith(ACK_PREFIX):
            self.acked.append(json.loads(text)["id"])
        elif text.startswith('{"type":"error"'):
            self.errors += 1

    async def start(self) -> None:
        await self.client.open(self.on_text)
        await self.client.login("stormpub")
        await self.client.upgrade()

    async def run(self, rate: float, until: Callable[[], bool]) -> None:
        start = time.monotonic()
        while not until():
            due = start + self.sent / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            assert self.client.conn is not None
            self.client.conn.send_text(json.dumps(
                {"type": "chat", "room": "lobby", "cid": f"storm-{self.sent}",
                 "text": f"storm message {self.sent}"}))
            self.sent += 1


@dataclass
class StormResult:
    server: str
    clients: int
    displaced: int
    resumed: int
    resume_p99_s: float
    resume_all_s: float
    peak_handshakes_s: int
    getex_exec_p99_us: float
    getex_count: int
    probe_rtt_p99_ms: float
    published: int
    lost: int
    repeated: int
    reordered: int
    failed_tries: dict[str, int]
    cores: dict[str, float]  # CPU from the kill until all resumed, by role (survivors only)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def peak_per_second(times: list[float]) -> int:
    """The most events inside any one-second window."""
    ordered = sorted(times)
    best, left = 0, 0
    for right, t in enumerate(ordered):
        while t - ordered[left] > 1.0:
            left += 1
        best = max(best, right - left + 1)
    return best


async def open_clients(clients: list[StormClient]) -> list[asyncio.Task[None]]:
    """Start every client's life; return once all are in the lobby."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def first(c: StormClient) -> None:
        async with gate:
            task = asyncio.create_task(c.live())
            tasks.append(task)
            await asyncio.wait_for(c.ready.wait(), READY_TIMEOUT_SECONDS)

    tasks: list[asyncio.Task[None]] = []
    await asyncio.gather(*(first(c) for c in clients))
    return tasks


def probe_session_reads(url: str, stop: EventType, out: PipeEnd) -> None:
    """In its own process: GETEX the probe key every PROBE_INTERVAL_SECONDS; send the RTTs."""
    redis = SyncRedis.from_url(url)
    rtts = []
    while not stop.is_set():
        started = time.perf_counter()
        redis.getex(PROBE_KEY, ex=600)
        rtts.append(time.perf_counter() - started)
        time.sleep(PROBE_INTERVAL_SECONDS)
    out.send(rtts)
    redis.close()


class SessionReads:
    """Redis's view of the storm's session reads: SLOWLOG of every command, and a GETEX probe.

    The probe runs in a process of its own, so the load side's event loop
    adds nothing to the round trips it measures.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = Redis.from_url(url, decode_responses=True)
        self.saved: dict[str, str] = {}
        self.stop = multiprocessing.Event()
        self.results, self.sender = multiprocessing.Pipe(duplex=False)
        self.prober = multiprocessing.Process(
            target=probe_session_reads, args=(url, self.stop, self.sender), daemon=True)

    async def start(self) -> None:
        for name in ("slowlog-log-slower-than", "slowlog-max-len"):
            current = await self.redis.config_get(name)
            self.saved[name] = str(current[name])
        await self.redis.config_set("slowlog-max-len", SLOWLOG_ENTRIES)
        await self.redis.config_set("slowlog-log-slower-than", 0)
        await self.redis.slowlog_reset()
        await self.redis.set(PROBE_KEY, b"x")
        self.prober.start()

    async def finish(self) -> tuple[list[float], list[float]]:
        """Stop and restore Redis's settings: (GETEX execution µs, probe RTT seconds)."""
        self.stop.set()
        loop = asyncio.get_running_loop()
        rtts: list[float] = await loop.run_in_executor(None, self.results.recv)
        await loop.run_in_executor(None, self.prober.join, 10.0)
        entries = await self.redis.slowlog_get(SLOWLOG_ENTRIES)
        for name, value in self.saved.items():
            await self.redis.config_set(name, value)
        await self.redis.slowlog_reset()
        await self.redis.aclose()
        durations = []
        for entry in entries:
            command = entry.get("command", b"")
            if isinstance(command, bytes):
                command = command.decode("latin-1")
            words = str(command).split()
            # The probe's reads are its own; only the instances' session reads count.
            if words and words[0].upper() == "GETEX" and PROBE_KEY not in words:
                durations.append(float(entry["duration"]))
        return durations, rtts


def losses(clients: list[StormClient], acked: list[str]) -> tuple[int, int, int]:
    """(lost, repeated, reordered) over all clients, against the publisher's acked ids."""
    keys = [(stream_key(a), a) for a in acked]
    lost = repeated = reordered = 0
    for c in clients:
        got = set(c.ids)
        lost += sum(1 for key, a in keys if key > c.joined_at_key and a not in got)
        repeated += len(c.ids) - len(got)
        order = [stream_key(i) for i in c.ids]
        reordered += sum(1 for a, b in zip(order, order[1:], strict=False) if b < a)
    return lost, repeated, reordered


async def wait_until(done: Callable[[], bool], timeout: float) -> None:
    """Poll `done` until it holds or `timeout` passes."""
    for _ in range(int(timeout / POLL_SECONDS)):
        if done():
            return
        await asyncio.sleep(POLL_SECONDS)


async def storm_chatfleet(args: argparse.Namespace, target: Target) -> StormResult:
    storm = Storm()
    clients = [StormClient(ChatClient(target.url, pin="chat1"),
                           f"storm{i // args.sockets_per_user}", storm)
               for i in range(args.clients)]
    publisher = Publisher(ChatClient(target.url, pin="chat2"))
    await publisher.start()
    tasks = await open_clients(clients)
    print(f"{len(clients)} clients in the lobby on instance 1; publishing {args.rate:g}/s",
          flush=True)
    pub_task = asyncio.create_task(publisher.run(args.rate, lambda: storm.stopping))
    await asyncio.sleep(WARMUP_SECONDS)
    reads = SessionReads(target.redis.url)
    await reads.start()
    survivors = {role: pids for role, pids in roles(target).items()}
    survivors["chat"] = target.instance_pids()[1:]
    cpu_before = {role: cpu_of(pids) for role, pids in survivors.items()}
    client_before = sum(os.times()[:2])
    storm.killed_at = time.monotonic()
    target.kill_instance(1)
    print("instance 1 killed (SIGKILL)", flush=True)
    await wait_until(lambda: all(c.resumed_at for c in clients), args.timeout)
    elapsed = time.monotonic() - storm.killed_at
    cores = {role: (cpu_of(pids) - cpu_before[role]) / elapsed
             for role, pids in survivors.items()}
    cores["client"] = (sum(os.times()[:2]) - client_before) / elapsed
    getex, rtts = await reads.finish()
    await asyncio.sleep(TAIL_SECONDS)
    storm.stopping = True
    await pub_task
    await wait_until(lambda: len(publisher.acked) >= publisher.sent, DRAIN_SECONDS)
    final = publisher.acked[-1] if publisher.acked else None
    await wait_until(lambda: all(c.last == final for c in clients), DRAIN_SECONDS)
    for c in clients:
        c.close()
    if publisher.client.conn is not None:
        publisher.client.conn.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return summarize("chatfleet", clients, storm, getex, rtts, publisher, cores)


def summarize(server: str, clients: list[StormClient], storm: Storm, getex: list[float],
              rtts: list[float], publisher: Publisher, cores: dict[str, float]) -> StormResult:
    assert storm.killed_at is not None
    killed = storm.killed_at
    back = [c.resumed_at - killed for c in clients if c.resumed_at is not None]
    lost, repeated, reordered = losses(clients, publisher.acked)
    whole = len(back) == len(clients)
    return StormResult(
        server=server, clients=len(clients),
        displaced=sum(1 for c in clients if c.displaced_at is not None),
        resumed=len(back),
        resume_p99_s=percentile(back, 0.99) if len(back) >= 0.99 * len(clients) else float("inf"),
        resume_all_s=max(back) if whole and back else float("inf"),
        peak_handshakes_s=peak_per_second(storm.handshakes),
        getex_exec_p99_us=percentile(getex, 0.99), getex_count=len(getex),
        probe_rtt_p99_ms=1000 * percentile(rtts, 0.99),
        published=len(publisher.acked), lost=lost, repeated=repeated, reordered=reordered,
        failed_tries=dict(storm.failures), cores=cores,
    )


HEADER = (f"{'server':<10} {'clients':>7} {'resumed':>7} {'99% s':>6} {'100% s':>6} "
          f"{'peak hs/s':>9} {'GETEX exec p99 µs':>17} {'probe RTT p99 ms':>16} "
          f"{'published':>9} {'lost':>5} {'repeated':>8} {'reordered':>9}")


def print_row(r: StormResult) -> None:
    print(f"{r.server:<10} {r.clients:>7} {r.resumed:>7} {r.resume_p99_s:>6.2f} "
          f"{r.resume_all_s:>6.2f} {r.peak_handshakes_s:>9} {r.getex_exec_p99_us:>17.1f} "
          f"{r.probe_rtt_p99_ms:>16.2f} {r.published:>9} {r.lost:>5} {r.repeated:>8} "
          f"{r.reordered:>9}")
    tries = ", ".join(f"{k} x{v}" for k, v in sorted(r.failed_tries.items())) or "none"
    cores = ", ".join(f"{k} {v:.2f}" for k, v in r.cores.items())
    print(f"{'':<10} failed reconnect tries: {tries}; cores until all resumed: {cores}",
          flush=True)


def run(args: argparse.Namespace) -> list[StormResult]:
    """Start a stack, run the storm, stop it; print and return the rows."""
    raise_nofile()
    env = {"CHAT_MAX_SOCKETS_PER_USER": str(args.sockets_per_user)}
    with bench_target("chatfleet", args.instances, env) as target:
        result = asyncio.run(storm_chatfleet(args, target))
    print()
    print(HEADER)
    print_row(result)
    return [result]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=2_000)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--rate", type=float, default=5.0, help="messages a second published")
    parser.add_argument("--sockets-per-user", type=int, default=20,
                        help="clients (each its own login) sharing one user name")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="give up waiting for resumes after this many seconds")
    return parser.parse_args(argv)


def main() -> None:
    run(parse_args())


if __name__ == "__main__":
    main()
