"""storm: M clients lose their instance at once; how fast are they all back, and is anything lost?

    python -m bench.storm                       # 2,000 clients on instance 1, kill -9 it
    python -m bench.storm --clients 500 --rate 10 --servers chatfleet

For each server (bench/targets.py: chatfleet's stack with the rate limit
off, then the python-socketio peer), one after the other. M clients sit in
the lobby, all on instance 1; a publisher on instance 2 says `--rate`
messages a second. Then instance 1 gets SIGKILL (and is restarted, as
supervisord does). A client counts as resumed when the first chat message
arrives on its new socket. After everyone is back (or `--timeout`), the
publisher stops and each client's messages are compared with the
publisher's confirmed ones after the point where the client joined.

chatfleet: clients log in through HAProxy pinned by its `chatfleet_server`
cookie and reconnect as static/chat/connection.js does (full-jitter backoff from
0.5 s doubling to 10 s, `GET /session`, then `/ws?after=<last id>`). The
publisher sends with a `cid`; its acks are the confirmed ids; a confirmed
id a resumed client never got is lost.

socketio: the peer has no stickiness, so clients first connect to
instance 1 directly and reconnect through HAProxy (same backoff), joining
the lobby again. It keeps no history, so what was said while a client was
away is missed by design: "lost" counts those (the publisher's own echo
confirms each message).

Printed: time from the kill until 99% and 100% are resumed, the peak of
handshakes completed in any one second, two views of Redis's session reads
during the storm (chatfleet only), messages lost, repeated or reordered,
failed reconnect tries by cause, and the survivors' CPU. Session reads are
GETEX (the store's one read): "GETEX exec p99" is Redis's own execution
time of every GETEX in the storm, from SLOWLOG with the threshold at 0
(switched on just before the kill, restored after); "probe RTT p99" is a
GETEX sent every 10 ms by a process of its own, so it includes waiting in
Redis's single-threaded queue behind the storm's other commands. Neither
includes the wait for a pooled connection inside an instance.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
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
from bench.procs import bench_target, cpu_of, roles
from bench.rawws import ChatClient, HttpError
from bench.sioclient import SioSocket, open_sio
from bench.targets import Target
from stack.limits import raise_nofile

# Clients logging in at once before the storm (keeps listen backlogs from overflowing).
OPEN_CONCURRENCY = 200
READY_TIMEOUT_SECONDS = 60.0
ROOM = "lobby"
CHAT_PREFIX = '{"type":"chat","id":"'
SIO_CHAT_PREFIX = b'42["chat"'
MARK_TEXT = "storm message "
SEQUENCE_MARK = MARK_TEXT.encode()
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


Key = tuple[int, int]  # a message's order: the stream id, or (sequence number, 0)


class Member:
    """A lobby member that reconnects like the browser client and records every message's key."""

    def __init__(self, storm: Storm, user: str) -> None:
        self.storm = storm
        self.user = user
        self.keys: list[Key] = []
        self.joined_at_key: Key = (0, 0)  # the last key it had when it first became ready
        self.ready = asyncio.Event()
        self.displaced_at: float | None = None
        self.resumed_at: float | None = None
        self.waiting_resume = False

    def record(self, key: Key) -> None:
        self.keys.append(key)
        if self.waiting_resume:
            self.waiting_resume = False
            self.resumed_at = time.monotonic()

    def became_ready(self) -> None:
        if not self.ready.is_set():
            self.joined_at_key = self.keys[-1] if self.keys else (0, 0)
            self.ready.set()

    async def connect_once(self) -> asyncio.Future[None]:
        """Connect and join the lobby; the future resolves when the connection closes."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def live(self) -> None:
        """Stay connected until the storm stops, backing off like the browser between tries."""
        failures = 0
        while not self.storm.stopping:
            try:
                closed = await self.connect_once()
                if self.storm.killed_at is not None:
                    self.storm.handshakes.append(time.monotonic())
                failures = 0
                await closed
                if self.storm.stopping:
                    return
                if self.displaced_at is None and self.storm.killed_at is not None:
                    self.displaced_at = time.monotonic()
                    self.waiting_resume = True
            except (OSError, TimeoutError, HttpError, ConnectionError) as error:
                failures += 1
                self.storm.failures[str(error) if isinstance(error, HttpError)
                                    else type(error).__name__] += 1
            await asyncio.sleep(random.uniform(
                0, min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** failures)))


class ChatfleetMember(Member):
    """Logs in once; each reconnect is `GET /session`, then `/ws?after=<last id>`."""

    def __init__(self, storm: Storm, user: str, client: ChatClient) -> None:
        super().__init__(storm, user)
        self.client = client
        self.last: str | None = None
        self.logged_in = False

    def on_text(self, text: str) -> None:
        if text.startswith(CHAT_PREFIX):
            msg_id = text[len(CHAT_PREFIX):text.index('"', len(CHAT_PREFIX))]
            self.last = msg_id
            self.record(stream_key(msg_id))
        elif text.startswith(PRESENCE_PREFIX):
            self.became_ready()

    async def connect_once(self) -> asyncio.Future[None]:
        conn = await self.client.open(self.on_text)
        if self.logged_in:
            await self.client.probe()
        else:
            await self.client.login(self.user)
            self.logged_in = True
        await self.client.upgrade(self.last)
        return conn.closed

    def close(self) -> None:
        if self.client.conn is not None:
            self.client.conn.close()


def sio_sequence(payload: bytes) -> int | None:
    """The publisher's sequence number in a Socket.IO `chat` event, else None."""
    if not payload.startswith(SIO_CHAT_PREFIX):
        return None
    at = payload.find(SEQUENCE_MARK)
    if at < 0:
        return None
    start = at + len(SEQUENCE_MARK)
    end = start
    while end < len(payload) and payload[end:end + 1].isdigit():
        end += 1
    return int(payload[start:end])


class SioMember(Member):
    """First connects to instance 1 directly (the peer has no stickiness), later via HAProxy.

    Socket.IO keeps no history: a reconnect joins the room again and hears
    what is said from then on; what was said meanwhile is missed.
    """

    def __init__(self, storm: Storm, user: str, first_url: str, front_url: str) -> None:
        super().__init__(storm, user)
        self.first_url = first_url
        self.front_url = front_url
        self.ws: SioSocket | None = None

    def on_event(self, payload: bytes) -> None:
        seq = sio_sequence(payload)
        if seq is not None:
            self.record((seq, 0))

    async def connect_once(self) -> asyncio.Future[None]:
        url = self.front_url if self.ready.is_set() else self.first_url
        self.ws = await open_sio(url, self.user, ROOM, self.on_event)
        self.became_ready()
        return self.ws.gone

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


class Publisher:
    """Says `storm message N` at a steady rate; `confirmed` holds the keys known stored/sent."""

    def __init__(self) -> None:
        self.confirmed: list[Key] = []
        self.sent = 0

    async def start(self) -> None:
        raise NotImplementedError

    def send(self, seq: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def run(self, rate: float, until: Callable[[], bool]) -> None:
        start = time.monotonic()
        while not until():
            due = start + self.sent / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            self.send(self.sent)
            self.sent += 1


class ChatfleetPublisher(Publisher):
    """Sends with a cid; a message is confirmed by its ack (stored in the room's stream)."""

    def __init__(self, client: ChatClient) -> None:
        super().__init__()
        self.client = client

    def on_text(self, text: str) -> None:
        if text.startswith(ACK_PREFIX):
            self.confirmed.append(stream_key(json.loads(text)["id"]))

    async def start(self) -> None:
        await self.client.open(self.on_text)
        await self.client.login("stormpub")
        await self.client.upgrade()

    def send(self, seq: int) -> None:
        assert self.client.conn is not None
        self.client.conn.send_text(json.dumps(
            {"type": "chat", "room": ROOM, "cid": f"storm-{seq}", "text": f"{MARK_TEXT}{seq}"}))

    def close(self) -> None:
        if self.client.conn is not None:
            self.client.conn.close()


class SioPublisher(Publisher):
    """Emits `chat`; a message is confirmed when it comes back to the publisher (the room echo)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.ws: SioSocket | None = None

    def on_event(self, payload: bytes) -> None:
        seq = sio_sequence(payload)
        if seq is not None:
            self.confirmed.append((seq, 0))

    async def start(self) -> None:
        self.ws = await open_sio(self.url, "stormpub", ROOM, self.on_event)

    def send(self, seq: int) -> None:
        assert self.ws is not None
        self.ws.send(b"42" + json.dumps(
            ["chat", {"room": ROOM, "text": f"{MARK_TEXT}{seq}"}]).encode())

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


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


async def open_clients(clients: list[Member]) -> list[asyncio.Task[None]]:
    """Start every client's life; return once all are in the lobby."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def first(c: Member) -> None:
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


def losses(members: list[Member], confirmed: list[Key]) -> tuple[int, int, int]:
    """(lost, repeated, reordered) against the publisher's confirmed keys.

    Over the members that came back: one still away at the end has missed
    everything since it left, which says it did not resume (the `resumed`
    column), not that a resumed client lost anything.
    """
    lost = repeated = reordered = 0
    for m in members:
        if m.displaced_at is not None and m.resumed_at is None:
            continue
        got = set(m.keys)
        lost += sum(1 for key in confirmed if key > m.joined_at_key and key not in got)
        repeated += len(m.keys) - len(got)
        reordered += sum(1 for a, b in zip(m.keys, m.keys[1:], strict=False) if b < a)
    return lost, repeated, reordered


async def wait_until(done: Callable[[], bool], timeout: float) -> None:
    """Poll `done` until it holds or `timeout` passes."""
    for _ in range(int(timeout / POLL_SECONDS)):
        if done():
            return
        await asyncio.sleep(POLL_SECONDS)


def make_members(args: argparse.Namespace, target: Target,
                 storm: Storm) -> tuple[list[Member], Publisher]:
    """M members that start on instance 1, and a publisher on instance 2."""
    members: list[Member] = []
    if target.protocol == "socketio":
        for i in range(args.clients):
            members.append(SioMember(storm, f"storm{i}", target.instance_urls[0], target.url))
        return members, SioPublisher(target.instance_urls[1])
    for i in range(args.clients):
        client = ChatClient(target.url, pin="chat1")
        members.append(ChatfleetMember(storm, f"storm{i // args.sockets_per_user}", client))
    return members, ChatfleetPublisher(ChatClient(target.url, pin="chat2"))


async def run_storm(args: argparse.Namespace, target: Target) -> StormResult:
    """Members on instance 1, a publisher on 2; SIGKILL 1; wait for resumes; count."""
    storm = Storm()
    members, publisher = make_members(args, target, storm)
    await publisher.start()
    tasks = await open_clients(members)
    print(f"{target.protocol}: {len(members)} clients in the lobby on instance 1; "
          f"publishing {args.rate:g}/s", flush=True)
    pub_task = asyncio.create_task(publisher.run(args.rate, lambda: storm.stopping))
    await asyncio.sleep(WARMUP_SECONDS)
    # Only chatfleet has sessions; the peer keeps its users in memory.
    reads = SessionReads(target.redis.url) if target.protocol == "chatfleet" else None
    if reads is not None:
        await reads.start()
    survivors = dict(roles(target))
    survivors["app"] = target.instance_pids()[1:]
    cpu_before = {role: cpu_of(pids) for role, pids in survivors.items()}
    client_before = sum(os.times()[:2])
    storm.killed_at = time.monotonic()
    target.kill_instance(1)
    print(f"{target.protocol}: instance 1 killed (SIGKILL)", flush=True)
    await wait_until(lambda: all(m.resumed_at for m in members), args.timeout)
    elapsed = time.monotonic() - storm.killed_at
    cores = {role: (cpu_of(pids) - cpu_before[role]) / elapsed
             for role, pids in survivors.items()}
    cores["client"] = (sum(os.times()[:2]) - client_before) / elapsed
    getex, rtts = await reads.finish() if reads is not None else ([], [])
    await asyncio.sleep(TAIL_SECONDS)
    storm.stopping = True
    await pub_task
    await wait_until(lambda: len(publisher.confirmed) >= publisher.sent, DRAIN_SECONDS)
    final = publisher.confirmed[-1] if publisher.confirmed else None
    back = [m for m in members if m.resumed_at is not None or m.displaced_at is None]
    await wait_until(lambda: all(m.keys and m.keys[-1] == final for m in back), DRAIN_SECONDS)
    for m in members:
        m.close()
    publisher.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return summarize(target.protocol, members, storm, getex, rtts, publisher, cores)


def summarize(server: str, members: list[Member], storm: Storm, getex: list[float],
              rtts: list[float], publisher: Publisher, cores: dict[str, float]) -> StormResult:
    assert storm.killed_at is not None
    killed = storm.killed_at
    back = [m.resumed_at - killed for m in members if m.resumed_at is not None]
    lost, repeated, reordered = losses(members, publisher.confirmed)
    whole = len(back) == len(members)
    return StormResult(
        server=server, clients=len(members),
        displaced=sum(1 for m in members if m.displaced_at is not None),
        resumed=len(back),
        resume_p99_s=percentile(back, 0.99) if len(back) >= 0.99 * len(members) else float("inf"),
        resume_all_s=max(back) if whole and back else float("inf"),
        peak_handshakes_s=peak_per_second(storm.handshakes),
        getex_exec_p99_us=percentile(getex, 0.99), getex_count=len(getex),
        probe_rtt_p99_ms=1000 * percentile(rtts, 0.99),
        published=len(publisher.confirmed), lost=lost, repeated=repeated, reordered=reordered,
        failed_tries=dict(storm.failures), cores=cores,
    )


HEADER = (f"{'server':<10} {'clients':>7} {'resumed':>7} {'99% s':>6} {'100% s':>6} "
          f"{'peak hs/s':>9} {'GETEX exec p99 µs':>17} {'probe RTT p99 ms':>16} "
          f"{'published':>9} {'lost':>5} {'repeated':>8} {'reordered':>9}")


def figure(value: float, digits: int) -> str:
    """A number, or n/a where the server has nothing to measure (the peer has no sessions)."""
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def print_row(r: StormResult) -> None:
    print(f"{r.server:<10} {r.clients:>7} {r.resumed:>7} {r.resume_p99_s:>6.2f} "
          f"{r.resume_all_s:>6.2f} {r.peak_handshakes_s:>9} "
          f"{figure(r.getex_exec_p99_us, 1):>17} {figure(r.probe_rtt_p99_ms, 2):>16} "
          f"{r.published:>9} {r.lost:>5} {r.repeated:>8} {r.reordered:>9}")


def print_details(r: StormResult) -> None:
    tries = ", ".join(f"{k} x{v}" for k, v in sorted(r.failed_tries.items())) or "none"
    cores = ", ".join(f"{k} {v:.2f}" for k, v in r.cores.items())
    print(f"{r.server}: failed reconnect tries: {tries}")
    print(f"{r.server}: cores from the kill until all resumed (survivors): {cores}")
    if r.server == "socketio":
        print("socketio: no history to resume from: 'lost' counts messages said while a "
              "client was away (missed by design, not a bug of the peer)")
    if r.resumed < r.clients:
        print(f"{r.server}: {r.clients - r.resumed} clients not back within the timeout "
              "(not counted in 'lost')")


def print_ratios(results: list[StormResult]) -> None:
    base = results[0]
    for r in results[1:]:
        print(f"{r.server}/{base.server}: 99% resumed x{r.resume_p99_s / base.resume_p99_s:.2f}, "
              f"100% resumed x{r.resume_all_s / base.resume_all_s:.2f}, "
              f"peak handshakes/s x{r.peak_handshakes_s / max(1, base.peak_handshakes_s):.2f}")


def run(args: argparse.Namespace) -> list[StormResult]:
    """For each server kind: start it, run the storm, stop it. Print the rows and the ratios."""
    raise_nofile()
    results = []
    for kind in args.servers:
        env = {"CHAT_MAX_SOCKETS_PER_LOGIN": str(args.sockets_per_user)}
        with bench_target(kind, args.instances, env if kind == "chatfleet" else None) as target:
            results.append(asyncio.run(run_storm(args, target)))
    print()
    print(HEADER)
    for result in results:
        print_row(result)
    for result in results:
        print_details(result)
    if len(results) > 1:
        print_ratios(results)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=2_000)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--rate", type=float, default=5.0, help="messages a second published")
    parser.add_argument("--sockets-per-user", type=int, default=20,
                        help="clients (each its own login) sharing one user name")
    parser.add_argument("--servers", default="chatfleet,socketio", type=lambda v: v.split(","),
                        help="which servers to storm, one after the other (bench/targets.py)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="give up waiting for resumes after this many seconds")
    return parser.parse_args(argv)


def main() -> None:
    run(parse_args())


if __name__ == "__main__":
    main()
