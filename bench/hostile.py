"""hostile: replay the security review's attacks at bounded sizes; print what each cost the server.

    python -m bench.hostile                          # own stack: 2 instances, Redis, HAProxy
    python -m bench.hostile --only bodies,replay --scale 0.5
    python -m bench.hostile --url http://127.0.0.1:8000 --redis-url redis://127.0.0.1:6380/0

Not a test: it asserts nothing, it measures. Every attack is bounded in
count and time, stays on loopback, and is cut short (its row says so) if the
chat processes' RSS passes `--rss-cap-mb` or the attack passes
`--attack-timeout`.

Started here, the stack is the project's own (bench/targets.py: supervisord,
HAProxy, its own Redis, on free ports) with every limit at its default but
one: the chat rate limit (20 per 10 s, burst 10) is raised to 1,000 per 10 s
with a burst of 1,000, so the bystander's 10 messages a second are never
refused, not even when a stalled instance takes a few seconds of them at
once. No attack relies on it: each user sends at most 10 messages. With `--url` the tool
attacks a running stack instead; `--redis-url` names its Redis, and the chat
processes (pids for RSS, ports for the direct attacks) are found in /proc by
their `chat_server.py --redis-url=...` command lines (or `--instance-urls`).

One row per attack (and a first row with no attack, for comparison):

- chat RSS: the sum over the chat processes before the attack, the peak of
  that sum and of the largest one (sampled every 100 ms while the attack
  runs), and the sum `--settle` seconds after it ended and its sockets closed
  (is the memory given back?);
- Redis: INFO's used_memory before, peak (sampled every 100 ms), after;
- bystander: a logged-in user of its own, on instance 1 through HAProxy, in
  a room of its own, sends a chat with a `cid` every 100 ms from a separate
  process; p50/p99 of the time to its ack, over the messages sent during the
  attack, and how many of those were never acked by the end of the settle
  time (with its reconnects and refusals, if any);
- what the attacker got back.

"Direct" attacks go to instance 1's own port, the bystander's instance.
Attack N comes from its own loopback address, 127.0.0.1N (attack 1 from
127.0.0.11), the bystander from 127.0.0.3, so a limit per client address that
one attack sets off falls on neither the next attack nor the bystander.

When an attack leaves the chat processes holding more than 50 MB over their
fresh size, they are restarted (`supervisorctl restart`: the product's drain)
before the next attack, so each row starts from the same RSS (`--fresh`; the
row is marked *). Redis is never restarted: its keys and memory carry over.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import multiprocessing
import random
import socket
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as PipeEnd
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.procs import bench_target, rss_bytes
from bench.rawws import (
    IP_BIND_ADDRESS_NO_PORT,
    ChatClient,
    Connection,
    CookieJar,
    HttpError,
    Response,
)
from bench.targets import ChatfleetTarget
from stack.limits import raise_nofile
from stack.settings import EdgeLimits

Frame = dict[str, Any]
MB = 1024 * 1024

# The stack this tool starts: the product's defaults, except a chat rate the
# bystander's 10 messages a second stay under even after a stall (the default
# is 20 per 10 s with a burst of 10).
STACK_ENV = {"CHAT_RATE_LIMIT": "1000", "CHAT_RATE_BURST": "1000"}

NET_ERRORS = (OSError, TimeoutError, ConnectionError, HttpError)
CONNECT_TIMEOUT = 5.0
FRAME_TIMEOUT = 10.0

# Monitor: how often RSS and Redis are read; how long a bystander's message
# may wait for its ack before it stops counting as "late" and is "unacked".
SAMPLE_SECONDS = 0.1
# Source addresses: each attack N its own (127.0.0.1N), the bystander, the filler
# of the long room, the victims watching an attack, the probe of attack 10.
ATTACK_SOURCE_BASE = 10
BYSTANDER_SOURCE = "127.0.0.3"
VICTIM_SOURCE = "127.0.0.4"
BYSTANDER_ROOM = "bystander"
BYSTANDER_USER = "bystander"
MONITOR_START_TIMEOUT = 60.0
MONITOR_REPLY_TIMEOUT = 60.0

# A long message: 4,000 characters (the text limit) of 3 bytes each in UTF-8,
# sent as a 12 KB frame (under the 16 KiB frame limit): what any user may say.
LONG_ROOM = "longroom"
LONG_TEXT = "\u20ac" * 4000
LONG_MESSAGES = 2000
# Users filling the room at once, each sending up to its burst, then leaving.
FILL_PARALLEL = 4
FILL_PER_USER = 10
FILL_SECONDS = 120.0

# 1. bodies
PARALLEL_BODIES = 8
BODY_CHUNK = 1 << 20
# 2. replay
NON_READERS = 48
RECONNECTING_NON_READERS = 8
SMALL_RCVBUF = 4096
REPLAY_HOLD_SECONDS = 10.0
RECONNECT_EVERY_SECONDS = 1.0
MAX_RECONNECTS = 100
REPLAY_DRAIN_SECONDS = 3.0
# 3. redis growth
LOGIN_FLOOD = 2000
LOGIN_CONCURRENCY = 50
ABANDONED_SOCKETS = 100
ROOMS_PER_SOCKET = 19  # the most a socket may join besides the lobby (limit 20)
CHATS_PER_SOCKET = 8
# 4. history
HISTORY_READERS = 3
HISTORY_PAGE = 50
# 6. presence flood
PRESENCE_ROOM = "presence-flood"
PRESENCE_SECONDS = 10.0
MAX_PRESENCE_ROUNDS = 20_000
# 7. logout race
LOGOUT_TRIES = 40
# 10. connection flood
FLOOD_CONNECTIONS = 3000
FLOOD_CONCURRENCY = 200
FLOOD_HOLD_SECONDS = 8.0
PROBE_SOURCE = "127.0.0.2"
PROBE_EVERY_SECONDS = 0.2
PROBE_TIMEOUT = 3.0
# 0. baseline
BASELINE_SECONDS = 5.0
# --fresh auto: restart the chat processes when they hold this much more than fresh.
FRESH_SLACK_MB = 50


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def tally(outcomes: Iterable[str]) -> str:
    """"400 x8, closed x2": each distinct outcome with its count, commonest first."""
    counts = Counter(outcomes)
    return ", ".join(f"{what} x{n}" for what, n in counts.most_common()) or "nothing"


def id_key(message_id: str) -> tuple[int, int]:
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq or 0)


def failure(error: BaseException) -> str:
    """A short name for why a request or connection failed."""
    if isinstance(error, HttpError):
        return f"HTTP {error.status}"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, ConnectionResetError):
        return "reset"
    if isinstance(error, ConnectionError):
        return "closed"
    return type(error).__name__


# -- connections ----------------------------------------------------------------


async def open_connection(host: str, port: int, source: str = "127.0.0.1",
                          on_text: Callable[[str], None] | None = None,
                          rcvbuf: int = 0) -> Connection:
    """A bench.rawws connection from `source`; `rcvbuf` > 0 shrinks its receive buffer
    before connecting (so a reader that stops reading stops the sender soon)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((source, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), CONNECT_TIMEOUT)
        _, protocol = await loop.create_connection(lambda: Connection(on_text), sock=sock)
    except BaseException:
        sock.close()
        raise
    return protocol


def host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def is_kind(kind: str, **fields: Any) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items())


def either(*tests: Callable[[Frame], bool]) -> Callable[[Frame], bool]:
    return lambda f: any(test(f) for test in tests)


IS_ERROR = is_kind("error")


class Peer:
    """A logged-in chat WebSocket that keeps the frames it got (chat frames only
    counted unless `keep_chat`) and can wait for one."""

    def __init__(self, ctx: Ctx, url: str, pin: str = "", source: str = "",
                 keep_chat: bool = True) -> None:
        self.client = ChatClient(url, source or ctx.source, pin)
        self.keep_chat = keep_chat
        self.frames: list[Frame] = []
        self.chats = 0
        self.chars = 0
        self.conn: Connection | None = None
        self.arrived = asyncio.Event()
        ctx.peers.append(self)

    def on_text(self, text: str) -> None:
        self.chars += len(text)
        if not self.keep_chat and text.startswith('{"type":"chat"'):
            self.chats += 1
            return
        try:
            frame = json.loads(text)
        except ValueError:
            return
        if isinstance(frame, dict):
            self.frames.append(frame)
            self.arrived.set()

    async def connect(self, rcvbuf: int = 0) -> None:
        self.abort()
        host, port = self.client.host_port
        self.conn = await open_connection(host, port, self.client.source, self.on_text, rcvbuf)
        self.conn.closed.add_done_callback(lambda _: self.arrived.set())
        self.client.conn = self.conn

    async def open(self, user: str, rcvbuf: int = 0) -> None:
        """Log in as `user` and open the chat socket (it joins the lobby by itself)."""
        await self.connect(rcvbuf)
        await self.client.login(user)
        await self.client.upgrade()

    async def reopen(self, rcvbuf: int = 0) -> None:
        """A new socket for the same login (the session cookie is kept)."""
        await self.connect(rcvbuf)
        await self.client.upgrade()

    def send(self, frame: Frame) -> None:
        self.send_raw(json.dumps(frame, ensure_ascii=False))

    def send_raw(self, text: str) -> None:
        if self.conn is not None:
            self.conn.send_text(text)

    @property
    def closed(self) -> bool:
        return self.conn is None or self.conn.closed.done()

    @property
    def close_code(self) -> int | None:
        return self.conn.close_code if self.conn is not None else None

    def how_closed(self) -> str:
        code = self.close_code
        return f"closed {code}" if code is not None else "dropped (no close frame)"

    async def wait_for(self, match: Callable[[Frame], bool], timeout: float = FRAME_TIMEOUT,
                       start: int = 0) -> Frame | None:
        """The first frame from index `start` on that matches; None on close or timeout."""
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.frames):
                if match(self.frames[index]):
                    return self.frames[index]
                index += 1
            remaining = deadline - time.monotonic()
            if self.closed or remaining <= 0:
                return None
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    async def join(self, room: str, after: str | None = None) -> Frame | None:
        """Join `room`; its presence frame, an error frame, or None (closed, timeout)."""
        mark = len(self.frames)
        frame: Frame = {"type": "join", "room": room}
        if after is not None:
            frame["after"] = after
        self.send(frame)
        return await self.wait_for(either(is_kind("presence", room=room), IS_ERROR), start=mark)

    async def chat(self, room: str, text: str, cid: str) -> Frame | None:
        """Say `text`; the ack, an error frame, or None."""
        mark = len(self.frames)
        self.send({"type": "chat", "room": room, "text": text, "cid": cid})
        return await self.wait_for(either(is_kind("ack", cid=cid), IS_ERROR), start=mark)

    def pause(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.pause_reading()

    def resume(self) -> None:
        if self.conn is not None and self.conn.transport is not None \
                and not self.conn.transport.is_closing():
            self.conn.transport.resume_reading()

    def abort(self) -> None:
        """Drop the TCP connection at once (RST): no close frame, no leave."""
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.abort()


# -- the site under attack -------------------------------------------------------


@dataclass
class Site:
    url: str
    instance_urls: list[str]
    redis_url: str
    pids: Callable[[], list[int]]
    # Restart the chat processes and wait until they serve (a stack of our own only).
    restart: Callable[[], None] | None = None

    @property
    def pins(self) -> list[str]:
        """HAProxy's stickiness cookie values, instance 1 first."""
        return [f"chat{n}" for n in range(1, len(self.instance_urls) + 1)]


def chat_processes(redis_url: str) -> list[tuple[int, int, str]]:
    """(instance number, pid, url) of every chat_server.py in /proc using `redis_url`."""
    found: list[tuple[int, int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(arg.endswith("chat_server.py") for arg in argv):
            continue
        flags: dict[str, str] = {}
        for i, arg in enumerate(argv):
            if arg.startswith("--"):
                name, has_value, value = arg[2:].partition("=")
                if not has_value and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    value = argv[i + 1]
                flags[name.replace("-", "_")] = value
        if redis_url and flags.get("redis_url", redis_url) != redis_url:
            continue
        number = int(flags.get("instance_number") or 0)
        base = int(flags.get("port_base") or 0)
        port = base + number if base else int(flags.get("port") or 8001)
        address = flags.get("address", "127.0.0.1")
        found.append((number, int(entry.name), f"http://{address}:{port}"))
    return sorted(found)


@contextlib.contextmanager
def open_site(args: argparse.Namespace) -> Iterator[Site]:
    """The stack to attack: a running one (`--url`), or one of our own, stopped after."""
    if args.url:
        if not args.redis_url:
            sys.exit("hostile: --url needs --redis-url (Redis memory is measured, rooms filled)")
        found = chat_processes(args.redis_url)
        urls = args.instance_urls.split(",") if args.instance_urls else [u for _, _, u in found]
        if not urls:
            sys.exit("hostile: no chat_server.py found for that Redis; give --instance-urls")
        yield Site(args.url.rstrip("/"), urls, args.redis_url,
                   lambda: [pid for _, pid, _ in chat_processes(args.redis_url)])
        return
    print(f"hostile: starting a stack of {args.instances} instances …", flush=True)
    # The front door's per-address limits as deployed (bench stacks turn them
    # off): every attack comes from an address of its own.
    with bench_target("chatfleet", args.instances, env=STACK_ENV, edge=EdgeLimits()) as target:
        restart = None
        if isinstance(target, ChatfleetTarget):
            stack = target.stack

            def restart() -> None:
                stack.ctl("restart", "chat:*")  # SIGTERM: the product's own drain
                stack.wait_ready()

        yield Site(target.url, list(target.instance_urls), target.redis.url,
                   lambda: [pid for pid in target.instance_pids() if pid], restart)


# -- the monitor: RSS, Redis memory and the bystander, in a process of its own ----------


class Bystander:
    """A user who chats on, timing each message's ack, and reconnects if cut off."""

    def __init__(self, url: str, pin: str, interval: float) -> None:
        self.client = ChatClient(url, BYSTANDER_SOURCE, pin)
        self.pin = pin
        self.interval = interval
        self.sent_at: dict[str, float] = {}
        self.rtt: dict[str, float] = {}
        self.events: Counter[str] = Counter()
        self.window: list[str] | None = None
        self.last_window: list[str] = []
        self.ready = asyncio.Event()
        self.logged_in = False
        self.counter = 0

    def on_text(self, text: str) -> None:
        if text.startswith('{"type":"chat"'):
            return
        try:
            frame = json.loads(text)
        except ValueError:
            return
        kind = frame.get("type")
        if kind == "ack":
            cid = str(frame.get("cid"))
            sent = self.sent_at.get(cid)
            if sent is not None and cid not in self.rtt:
                self.rtt[cid] = time.monotonic() - sent
        elif kind == "error":
            self.events[f"error {frame.get('code')}"] += 1
        elif kind == "presence" and frame.get("room") == BYSTANDER_ROOM:
            self.ready.set()

    async def connect(self) -> Connection:
        self.ready.clear()
        # Always instance 1 (HAProxy re-pins a client whose instance was down).
        self.client.jar.values["chatfleet_server"] = self.pin
        conn = await self.client.open(self.on_text)
        if self.logged_in:
            try:
                await self.client.probe()
            except HttpError:
                self.logged_in = False
        if not self.logged_in:
            await self.client.login(BYSTANDER_USER)
            self.logged_in = True
        await self.client.upgrade()
        conn.send_text(json.dumps({"type": "join", "room": BYSTANDER_ROOM}))
        await asyncio.wait_for(self.ready.wait(), FRAME_TIMEOUT)
        return conn

    async def run(self) -> None:
        first = True
        while True:
            try:
                conn = await self.connect()
            except (*NET_ERRORS, ValueError):
                self.events["connect failed"] += 1
                await asyncio.sleep(0.5)
                continue
            if not first:
                self.events["reconnect"] += 1
            first = False
            while not conn.closed.done():
                self.counter += 1
                cid = f"b{self.counter}"
                self.sent_at[cid] = time.monotonic()
                if self.window is not None:
                    self.window.append(cid)
                conn.send_text(json.dumps(
                    {"type": "chat", "room": BYSTANDER_ROOM, "text": f"ping {self.counter}",
                     "cid": cid}))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(conn.closed), self.interval)
            self.ready.clear()
            code = conn.close_code
            self.events[f"closed {code}" if code is not None else "dropped"] += 1
            await asyncio.sleep(0.2)

    def begin(self) -> None:
        self.window = []

    def end(self) -> None:
        self.last_window, self.window = self.window or [], None

    def stats(self) -> dict[str, Any]:
        rtts = [self.rtt[c] for c in self.last_window if c in self.rtt]
        return {"sent": len(self.last_window), "acked": len(rtts),
                "p50_ms": 1000 * percentile(rtts, 0.50), "p99_ms": 1000 * percentile(rtts, 0.99)}


class Monitor:
    """Samples RSS and Redis memory, runs the bystander, answers the tool over a pipe."""

    def __init__(self, pipe: PipeEnd, url: str, pin: str, redis_url: str, pids: list[int],
                 interval: float) -> None:
        self.pipe = pipe
        self.pids = pids
        self.redis: Redis = Redis.from_url(redis_url)
        self.bystander = Bystander(url, pin, interval)
        self.now: dict[str, float] = {"rss_sum": 0, "rss_max": 0, "redis": 0}
        self.peak: dict[str, float] | None = None
        self.dead: set[int] = set()
        self.events_at_begin: Counter[str] = Counter()

    async def sample(self) -> dict[str, float]:
        rss: list[int] = []
        for pid in self.pids:
            try:
                rss.append(rss_bytes(pid))
            except OSError:
                self.dead.add(pid)
        used = self.now["redis"]
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            info = await asyncio.wait_for(self.redis.info("memory"), 2.0)
            used = float(info["used_memory"])
        self.now = {"rss_sum": float(sum(rss)), "rss_max": float(max(rss, default=0)),
                    "redis": used}
        if self.peak is not None:
            self.peak = {k: max(v, self.now[k]) for k, v in self.peak.items()}
        return self.now

    async def sample_forever(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    async def answer(self, command: tuple[Any, ...]) -> dict[str, Any]:
        kind = command[0]
        if kind == "pids":
            self.pids = list(command[1])
            self.dead.clear()
            return {}
        if kind == "ready":
            await asyncio.wait_for(self.bystander.ready.wait(), MONITOR_START_TIMEOUT)
            return {}
        if kind == "begin":
            now = await self.sample()
            self.peak = dict(now)
            self.bystander.begin()
            self.events_at_begin = Counter(self.bystander.events)
            return dict(now)
        if kind == "end":
            await self.sample()
            peak, self.peak = self.peak or dict(self.now), None
            self.bystander.end()
            return {**peak, "dead": sorted(self.dead)}
        if kind == "after":
            now = await self.sample()
            events = Counter(self.bystander.events)
            events.subtract(self.events_at_begin)
            return {**now, **self.bystander.stats(),
                    "events": {k: v for k, v in events.items() if v > 0}}
        raise ValueError(f"unknown monitor command {kind!r}")

    async def serve(self) -> None:
        await self.sample()
        sampler = asyncio.create_task(self.sample_forever())
        chatter = asyncio.create_task(self.bystander.run())
        try:
            await asyncio.wait_for(self.bystander.ready.wait(), MONITOR_START_TIMEOUT)
            self.pipe.send({"ready": True})
        except TimeoutError:
            self.pipe.send({"ready": False, "events": dict(self.bystander.events)})
            return
        loop = asyncio.get_running_loop()
        try:
            while True:
                command = await loop.run_in_executor(None, self.pipe.recv)
                if command[0] == "stop":
                    return
                self.pipe.send(await self.answer(command))
        finally:
            sampler.cancel()
            chatter.cancel()
            await asyncio.gather(sampler, chatter, return_exceptions=True)
            await self.redis.aclose()


def monitor_main(pipe: PipeEnd, url: str, pin: str, redis_url: str, pids: list[int],
                 interval: float) -> None:
    """The monitor process: its own event loop, so the attacks' load on ours never
    delays a sample or a bystander's message."""
    with contextlib.suppress(KeyboardInterrupt, EOFError, BrokenPipeError):
        asyncio.run(Monitor(pipe, url, pin, redis_url, pids, interval).serve())


class MonitorHandle:
    """The tool's side of the monitor process."""

    def __init__(self, site: Site, interval: float) -> None:
        self.pipe, child = multiprocessing.Pipe()
        self.process = multiprocessing.Process(
            target=monitor_main, daemon=True,
            args=(child, site.url, site.pins[0], site.redis_url, site.pids(), interval))
        self.process.start()
        if not self.pipe.poll(MONITOR_START_TIMEOUT + 10):
            self.stop()
            raise RuntimeError("the monitor did not start")
        hello = self.pipe.recv()
        if not hello.get("ready"):
            self.stop()
            raise RuntimeError(f"the bystander could not join: {hello.get('events')}")

    def _recv(self) -> dict[str, Any]:
        if not self.pipe.poll(MONITOR_REPLY_TIMEOUT):
            raise TimeoutError("the monitor did not answer")
        reply: dict[str, Any] = self.pipe.recv()
        return reply

    async def ask(self, *command: Any) -> dict[str, Any]:
        self.pipe.send(command)
        return await asyncio.get_running_loop().run_in_executor(None, self._recv)

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.pipe.send(("stop",))
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()  # our own child, by its pid
            self.process.join(5)


# -- what every attack gets ---------------------------------------------------------


@dataclass
class Ctx:
    site: Site
    redis: Redis
    args: argparse.Namespace
    tag: str = field(default_factory=lambda: f"{random.randrange(16**4):04x}")
    # The attack's own source address (127.0.0.1N for attack N): a limit per client
    # address that one attack sets off never falls on the next one or the bystander.
    source: str = "127.0.0.1"
    got: list[str] = field(default_factory=list)
    peers: list[Peer] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    # The long room, filled once per run (attacks 2 and 4).
    long_sent: int = 0
    long_last_id: str = ""
    long_refusals: Counter[str] = field(default_factory=Counter)
    # The chat processes' RSS sum when fresh (MB), to tell when an attack left memory behind.
    fresh_rss_mb: float = 0.0

    def count(self, n: int, minimum: int = 1) -> int:
        return max(minimum, round(n * float(self.args.scale)))

    def seconds(self, s: float, minimum: float = 1.0) -> float:
        return max(minimum, s * float(self.args.scale))

    def user(self, what: str, n: int | str = "") -> str:
        """A user name unique to this run (names are 1-32 of [A-Za-z0-9._-])."""
        return f"{what}{self.tag}{n}"[:32]

    @property
    def front(self) -> str:
        return self.site.url

    @property
    def direct(self) -> str:
        return self.site.instance_urls[0]

    def close_all(self) -> None:
        """Drop every connection the attack left open (also when it was cut short)."""
        for peer in self.peers:
            peer.abort()
        for sock in self.sockets:
            sock.close()
        for writer in self.writers:
            writer.transport.abort()
        self.peers, self.sockets, self.writers = [], [], []


async def gather_bounded(limit: int, jobs: Iterable[Callable[[], Awaitable[str]]]) -> list[str]:
    """Run the jobs, `limit` at a time; each job's outcome, or its failure's name."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[str]]) -> str:
        async with gate:
            try:
                return await job()
            except (*NET_ERRORS, ValueError) as error:
                return failure(error)

    return list(await asyncio.gather(*(one(job) for job in jobs)))


async def xsrf_token(url: str, source: str) -> str:
    client = ChatClient(url, source)
    await client.open()
    try:
        await client.call("GET", "/")
    finally:
        if client.conn is not None:
            client.conn.close()
    return client.jar.values.get("_xsrf", "")


async def census(redis: Redis) -> Counter[str]:
    """Keys by kind (from their names), and how many of each have no expiry ("kind*")."""
    kinds: Counter[str] = Counter()
    batch: list[str] = []

    async def flush() -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.ttl(key)
            ttls = await pipe.execute()
        for key, ttl in zip(batch, ttls, strict=True):
            kinds[key_kind(key)] += 1
            if ttl == -1:
                kinds[key_kind(key) + "*"] += 1
        batch.clear()

    async for raw in redis.scan_iter(count=1000):
        batch.append(raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw))
        if len(batch) >= 500:
            await flush()
    if batch:
        await flush()
    return kinds


def key_kind(key: str) -> str:
    if key.startswith("session:"):
        return "session"
    if key.startswith("login:"):
        return "login"
    if ":presence" in key:
        return "presence"
    if key.endswith(":stream"):
        return "stream"
    if ":dedupe:" in key:
        return "dedupe"
    return "other"


def census_change(before: Counter[str], after: Counter[str]) -> str:
    kinds = ("session", "login", "presence", "stream", "dedupe", "other")
    total = sum(after[k] for k in kinds) - sum(before[k] for k in kinds)
    forever = sum(after[k + "*"] for k in kinds) - sum(before[k + "*"] for k in kinds)
    parts = [f"{k} {after[k] - before[k]:+d}" for k in kinds if after[k] != before[k]]
    lasting = [f"{k} {after[k + '*'] - before[k + '*']:+d}" for k in kinds
               if after[k + "*"] != before[k + "*"]]
    return (f"Redis keys {total:+d} ({', '.join(parts) or 'none'}); "
            f"keys without expiry {forever:+d} ({', '.join(lasting) or 'none'})")


async def stream_of(redis: Redis, room: str) -> tuple[str, int, int] | None:
    """The room's stream as Redis holds it: (key, entries, bytes); None if not found.
    Found by the room's hash tag, so the tool does not depend on the key layout."""
    async for raw in redis.scan_iter(match=f"*{{{room}}}*", _type="stream", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        length = int(await redis.xlen(key))
        usage = await redis.memory_usage(key, samples=0)
        return key, length, int(usage or 0)
    return None


# -- filling a room with long messages, as an attacker can -------------------------------


async def fill_long_room(ctx: Ctx) -> None:
    """Fill LONG_ROOM with long messages before attacks 2 and 4 (not measured).

    `--fill chat` (default): through the front door, as many users, each
    sending up to its burst and leaving: what any attacker can do, so the
    room holds what the product lets it hold. `--fill xadd`: one real message,
    then copies of its stream entry written straight into Redis."""
    want = ctx.count(LONG_MESSAGES, minimum=20)
    if ctx.long_sent >= want:
        return
    if ctx.args.fill == "xadd":
        await fill_by_xadd(ctx, want)
        return
    deadline = time.monotonic() + FILL_SECONDS
    made = 0
    while ctx.long_sent < want and time.monotonic() < deadline and made < want:
        batch = range(made, made + FILL_PARALLEL)
        made += FILL_PARALLEL
        await gather_bounded(FILL_PARALLEL, [
            functools.partial(fill_as_one_user, ctx, k, want, FILL_PER_USER) for k in batch])


async def fill_as_one_user(ctx: Ctx, k: int, want: int, quota: int) -> str:
    # Each filler from an address of its own: the fill is set-up, not an attack,
    # and must not meet the front door's per-address login limit.
    peer = Peer(ctx, ctx.front, source=f"127.0.5.{k % 250 + 1}", keep_chat=False)
    try:
        await peer.open(ctx.user("fill", k))
        joined = await peer.join(LONG_ROOM, ctx.long_last_id or "0-0")
        if joined is None or joined["type"] == "error":
            ctx.long_refusals["join " + str(joined and joined.get("code"))] += 1
            return "refused"
        for j in range(quota):
            if ctx.long_sent >= want:
                break
            answer = await peer.chat(LONG_ROOM, LONG_TEXT, f"fill{k}-{j}")
            if answer is None or answer["type"] == "error":
                ctx.long_refusals[str(answer and answer.get("code")) if answer else
                                  peer.how_closed()] += 1
                break
            ctx.long_sent += 1
            if not ctx.long_last_id or id_key(answer["id"]) > id_key(ctx.long_last_id):
                ctx.long_last_id = answer["id"]
        peer.send({"type": "leave", "room": LONG_ROOM})
        await asyncio.sleep(0.05)
        return "ok"
    finally:
        peer.abort()


async def fill_by_xadd(ctx: Ctx, want: int) -> None:
    await fill_as_one_user(ctx, 0, 1, 1)
    found = await stream_of(ctx.redis, LONG_ROOM)
    if found is None or not ctx.long_last_id:
        return
    key = found[0]
    rows: Any = await ctx.redis.xrange(key, min=ctx.long_last_id, max=ctx.long_last_id)
    fields = rows[0][1]
    while ctx.long_sent < want:
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for _ in range(min(200, want - ctx.long_sent)):
                pipe.xadd(key, fields)
                ctx.long_sent += 1
            await pipe.execute()


async def long_room_note(ctx: Ctx) -> str:
    found = await stream_of(ctx.redis, LONG_ROOM)
    stored = f"{found[1]} stored ({found[2] / MB:.1f} MB in Redis)" if found else "stream not found"
    refused = f", refused: {tally(ctx.long_refusals.elements())}" if ctx.long_refusals else ""
    return (f"room {LONG_ROOM}: {ctx.long_sent} long messages sent ({ctx.args.fill}), "
            f"{stored}{refused}")


# -- the attacks --------------------------------------------------------------------------


async def attack_baseline(ctx: Ctx) -> None:
    """0. No attack: the bystander alone, for comparison."""
    await asyncio.sleep(ctx.seconds(BASELINE_SECONDS))
    ctx.got.append("nothing sent")


async def post_body(ctx: Ctx, url: str, token: str, size: int) -> str:
    """One POST /login of `size` bytes, sent in 1 MB writes; the status, or how it ended."""
    host, port = host_port(url)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=(ctx.source, 0)), CONNECT_TIMEOUT)
    ctx.writers.append(writer)
    prefix = f"_xsrf={token}&user=".encode()
    writer.write((f"POST /login HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: _xsrf={token}\r\n"
                  "Content-Type: application/x-www-form-urlencoded\r\n"
                  f"Content-Length: {size}\r\n\r\n").encode() + prefix)
    left = size - len(prefix)
    chunk = b"a" * BODY_CHUNK
    cut = ""
    try:
        while left > 0:
            n = min(BODY_CHUNK, left)
            writer.write(chunk if n == BODY_CHUNK else chunk[:n])
            left -= n
            await asyncio.wait_for(writer.drain(), 30)
    except (OSError, TimeoutError) as error:
        cut = f" (upload {failure(error)} at {(size - left) // MB} MB)"
    try:
        line = await asyncio.wait_for(reader.readline(), 60)
    except (OSError, TimeoutError) as error:
        return f"no answer: {failure(error)}{cut}"
    words = line.split()
    return (f"HTTP {words[1].decode()}" if len(words) > 1 else "no answer: closed") + cut


async def attack_bodies(ctx: Ctx) -> None:
    """1. Large request bodies: Tornado reads a POST's whole body into memory (up to its
    100 MB default) before the handler or the XSRF check runs; 8 in parallel."""
    size = max(4096, int(ctx.args.body_mb * MB * ctx.args.scale))
    token = await xsrf_token(ctx.front, ctx.source)
    for label, url in (("front", ctx.front), ("direct", ctx.direct)):
        start = time.monotonic()
        outcomes = await gather_bounded(PARALLEL_BODIES, [
            functools.partial(post_body, ctx, url, token, size) for _ in range(PARALLEL_BODIES)])
        ctx.got.append(f"{label}: {PARALLEL_BODIES} x {size / MB:.0f} MB: {tally(outcomes)} "
                       f"in {time.monotonic() - start:.1f} s")
        for writer in ctx.writers:
            writer.transport.abort()
        ctx.writers.clear()


async def open_non_reader(ctx: Ctx, user: str) -> Peer:
    """A socket with a tiny receive buffer that asks for the whole room and never reads."""
    peer = Peer(ctx, ctx.front, keep_chat=False)
    await peer.open(user, rcvbuf=SMALL_RCVBUF)
    peer.pause()
    peer.send({"type": "join", "room": LONG_ROOM, "after": "0-0"})
    return peer


async def reconnecting_non_reader(ctx: Ctx, k: int, until: float) -> int:
    """Join from 0-0, wait, drop the connection, again: how many joins it sent."""
    peer = await open_non_reader(ctx, ctx.user("renr", k))
    joins = 1
    while time.monotonic() < until and joins < MAX_RECONNECTS:
        await asyncio.sleep(RECONNECT_EVERY_SECONDS)
        try:
            await peer.reopen(rcvbuf=SMALL_RCVBUF)
        except NET_ERRORS:
            continue
        peer.pause()
        peer.send({"type": "join", "room": LONG_ROOM, "after": "0-0"})
        joins += 1
    peer.abort()
    return joins


async def attack_replay(ctx: Ctx) -> None:
    """2. History replay to sockets that never read: a join with after=0-0 replays the
    whole room of long messages (read from Redis in big pages) to a socket that takes
    none of it; 48 such sockets, plus 8 that drop and join again every second."""
    ctx.got.append(await long_room_note(ctx))
    hold = ctx.seconds(REPLAY_HOLD_SECONDS, 2.0)
    gate = asyncio.Semaphore(16)
    quiet: list[Peer] = []
    failures: list[str] = []

    async def one(i: int) -> None:
        async with gate:
            try:
                quiet.append(await open_non_reader(ctx, ctx.user("nr", i)))
            except (*NET_ERRORS, ValueError) as error:
                failures.append(failure(error))

    await asyncio.gather(*(one(i) for i in range(ctx.count(NON_READERS))))
    until = time.monotonic() + hold
    reconnecting = range(ctx.count(RECONNECTING_NON_READERS))
    joins = await asyncio.gather(
        *(reconnecting_non_reader(ctx, k, until) for k in reconnecting), return_exceptions=True)
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    # Read at last: a socket the server cut off ends (after what was buffered).
    for peer in quiet:
        peer.resume()
    ends = [p.conn.closed for p in quiet if p.conn is not None]
    if ends:
        await asyncio.wait(ends, timeout=REPLAY_DRAIN_SECONDS)
    cut = [p for p in quiet if p.closed]
    got = sorted(p.chats for p in cut)
    spread = f" (each after {got[0]}-{got[-1]} messages)" if got else ""
    sent = sum(j for j in joins if isinstance(j, int))
    ctx.got.append(f"{len(quiet)} non-readers: cut off {len(cut)}{spread}, still open "
                   f"{len(quiet) - len(cut)} after {hold:.0f} s"
                   + (f", failed to open: {tally(failures)}" if failures else "")
                   + f"; reconnecting: {sent} joins from 0-0")


async def attack_redis(ctx: Ctx) -> None:
    """3. Redis growth by anyone: every login stores a session (and a login key) for
    7 days, without a bound on logins; rooms joined and abandoned (TCP dropped, no
    leave) leave presence entries and streams behind, some with no expiry."""
    before = await census(ctx.redis)

    async def login(i: int) -> str:
        client = ChatClient(ctx.front, ctx.source)
        await client.open()
        try:
            await client.login(ctx.user("flood", f"{i}x{random.randrange(1 << 30):x}"))
            return "302"
        finally:
            if client.conn is not None:
                client.conn.close()

    logins = ctx.count(LOGIN_FLOOD)
    start = time.monotonic()
    outcomes = await gather_bounded(LOGIN_CONCURRENCY, [
        functools.partial(login, i) for i in range(logins)])
    ctx.got.append(f"{logins} logins in {time.monotonic() - start:.1f} s: {tally(outcomes)}")

    joined: Counter[str] = Counter()
    chats: Counter[str] = Counter()

    async def abandon(i: int) -> str:
        peer = Peer(ctx, ctx.front, keep_chat=False)
        await peer.open(ctx.user("ab", i))
        rooms = [ctx.user(f"ab{i}r", j) for j in range(ROOMS_PER_SOCKET)]
        for room in rooms:
            answer = await peer.join(room)
            joined["ok" if answer and answer["type"] == "presence" else
                   str(answer.get("code")) if answer else peer.how_closed()] += 1
        for j, room in enumerate(rooms[:CHATS_PER_SOCKET]):
            answer = await peer.chat(room, "hello", f"ab{j}")
            chats["acked" if answer and answer["type"] == "ack" else
                  str(answer.get("code")) if answer else peer.how_closed()] += 1
        peer.abort()  # no leave, no close frame: the TCP connection just ends
        return "ok"

    sockets = ctx.count(ABANDONED_SOCKETS)
    opened = await gather_bounded(20, [functools.partial(abandon, i) for i in range(sockets)])
    ctx.got.append(f"{sockets} sockets x {ROOMS_PER_SOCKET} new rooms then dropped "
                   f"({tally(opened)}): joins {tally(joined.elements())}, "
                   f"chats {tally(chats.elements())}")
    ctx.got.append(census_change(before, await census(ctx.redis)))


async def attack_history(ctx: Ctx) -> None:
    """4. A history page of long messages: 50 messages of 12 KB are one ~600 KB frame,
    past the 512 KiB slow-consumer bound, so an honest reader asking for a page is cut
    off instead of answered."""
    ctx.got.append(await long_room_note(ctx))
    for label, url in (("front", ctx.front), ("direct", ctx.direct)):
        joins: list[str] = []
        pages: list[str] = []
        for i in range(ctx.count(HISTORY_READERS)):
            peer = Peer(ctx, url)
            try:
                await peer.open(ctx.user(f"rd{label[0]}", i))
            except (*NET_ERRORS, ValueError) as error:
                joins.append(f"login {failure(error)}")
                continue
            answer = await peer.join(LONG_ROOM)
            if answer is None or answer["type"] != "presence":
                joins.append(peer.how_closed() if peer.closed else
                             f"error {answer.get('code')}" if answer else "no answer")
                peer.abort()
                continue
            got = sum(1 for f in peer.frames if f.get("type") == "chat")
            joins.append(f"ok, {got} msgs")
            mark = len(peer.frames)
            peer.send({"type": "history", "room": LONG_ROOM, "limit": HISTORY_PAGE})
            page = await peer.wait_for(either(is_kind("history", room=LONG_ROOM), IS_ERROR),
                                       start=mark)
            if page is None:
                pages.append("cut: " + peer.how_closed() if peer.closed else "no answer")
            elif page["type"] == "error":
                pages.append(f"error {page.get('code')}")
            else:
                size = len(json.dumps(page, ensure_ascii=False).encode()) // 1024
                pages.append(f"answered {len(page.get('messages', []))} msgs "
                             f"({size} KB), more={page.get('more')}")
            peer.abort()
        ctx.got.append(f"{label}: join {tally(joins)}; page of {HISTORY_PAGE}: {tally(pages)}")


async def attack_presence(ctx: Ctx) -> None:
    """6. Presence flood: joins and leaves have no rate limit, and a user's first join
    and last leave of a room are announced to everyone in it; one login loops them."""
    watcher = Peer(ctx, ctx.front, source=VICTIM_SOURCE)
    await watcher.open(ctx.user("watcher"))
    if await watcher.join(PRESENCE_ROOM) is None:
        ctx.got.append("the watcher could not join")
        return
    flooder = Peer(ctx, ctx.front)
    flooder_name = ctx.user("flooder")
    await flooder.open(flooder_name)
    seconds = ctx.seconds(PRESENCE_SECONDS)
    deadline = time.monotonic() + seconds
    rounds = 0
    refused: Counter[str] = Counter()
    while time.monotonic() < deadline and rounds < MAX_PRESENCE_ROUNDS and not flooder.closed:
        answer = await flooder.join(PRESENCE_ROOM)
        if answer is None:
            break
        if answer["type"] == "error":
            refused[str(answer.get("code"))] += 1
        flooder.send({"type": "leave", "room": PRESENCE_ROOM})
        rounds += 1
        if len(flooder.frames) > 1000:  # keep memory flat: nothing old is looked at again
            del flooder.frames[:-10]
    await asyncio.sleep(1.0)  # the last notices arrive
    notices = Counter(f["type"] for f in watcher.frames
                      if f.get("user") == flooder_name and f.get("room") == PRESENCE_ROOM
                      and f.get("type") in ("joined", "left"))
    ctx.got.append(
        f"{rounds} join+leave rounds in {seconds:.0f} s"
        + (f" (refused: {tally(refused.elements())})" if refused else "")
        + (f", flooder {flooder.how_closed()}" if flooder.closed else "")
        + f"; the watcher got {notices['joined']} joined + {notices['left']} left notices")


async def attack_logout(ctx: Ctx) -> None:
    """7. Logout racing a session refresh: GET /session gives the session a new id
    (writing it back) while POST /logout deletes it; if the refresh lands last, the
    session lives on under the new cookie after the logout."""
    tries = ctx.count(LOGOUT_TRIES, minimum=2)
    survived: Counter[str] = Counter()
    refresh: list[str] = []
    logout: list[str] = []
    pins = ctx.site.pins
    for i in range(tries):
        a = ChatClient(ctx.front, ctx.source)
        await a.open()
        try:
            await a.login(ctx.user("race", i))
        except (*NET_ERRORS, ValueError) as error:
            refresh.append(f"login {failure(error)}")
            continue
        b = ChatClient(ctx.front, ctx.source, jar=CookieJar(dict(a.jar.values)))
        # Odd tries: the logout goes to the other instance.
        where = "same instance"
        if i % 2 and len(pins) > 1:
            mine = a.jar.values.get("chatfleet_server", pins[0])
            b.jar.values["chatfleet_server"] = pins[1] if mine == pins[0] else pins[0]
            where = "other instance"
        await b.open()
        form = urllib.parse.urlencode({"_xsrf": a.jar.values.get("_xsrf", "")}).encode()
        answers = await asyncio.gather(
            a.call("GET", "/session"),
            b.call("POST", "/logout", form, {"Content-Type": "application/x-www-form-urlencoded"}),
            return_exceptions=True)
        for outcomes, answer in zip((refresh, logout), answers, strict=True):
            outcomes.append(str(answer.status) if isinstance(answer, Response)
                            else failure(answer))
        check = ChatClient(ctx.front, ctx.source, jar=CookieJar(dict(a.jar.values)))
        await check.open()
        try:
            after = await check.call("GET", "/session")
            if after.status == 200:
                survived[where] += 1
        finally:
            for client in (a, b, check):
                if client.conn is not None:
                    client.conn.close()
    ctx.got.append(f"{tries} races: /session {tally(refresh)}; /logout {tally(logout)}; "
                   f"still logged in after the logout: {sum(survived.values())}/{tries}"
                   + (f" ({tally(survived.elements())})" if survived else ""))


async def attack_surrogate(ctx: Ctx) -> None:
    """8. A lone surrogate: JSON may spell "\\ud800", which no UTF-8 encoder (socket,
    log, Redis) can take; does the sender get an error frame, and its socket stay open?"""
    variants = {
        "in text": r'{"type":"chat","room":"lobby","text":"\ud800","cid":"sur-text"}',
        "in cid": r'{"type":"chat","room":"lobby","text":"lone surrogate cid","cid":"\ud800"}',
    }
    for name, raw in variants.items():
        peer = Peer(ctx, ctx.front)
        await peer.open(ctx.user("sur", name[3]))
        await peer.wait_for(is_kind("presence", room="lobby"))
        mark = len(peer.frames)
        peer.send_raw(raw)
        answer = await peer.wait_for(either(IS_ERROR, is_kind("ack")), 3.0, start=mark)
        said = (f"error {answer.get('code')}" if answer and answer["type"] == "error" else
                f"ack {answer.get('id')}" if answer else
                peer.how_closed() if peer.closed else "no answer")
        check = (None if peer.closed else
                 await peer.chat("lobby", "still here?", f"sur-ok-{name[3]}"))
        alive = "socket still works" if check and check["type"] == "ack" else (
            f"socket {peer.how_closed()}" if peer.closed else "socket does not answer")
        ctx.got.append(f"{name}: {said}, {alive}")
        peer.abort()


async def attack_cid(ctx: Ctx) -> None:
    """9. cid reuse across users: the dedupe key is the room and the cid, not the
    sender, so user B sending a cid user A used is acked with A's message id and B's
    message is dropped."""
    room = ctx.user("cid")
    a, b = Peer(ctx, ctx.front), Peer(ctx, ctx.front)
    await a.open(ctx.user("cida"))
    await b.open(ctx.user("cidb"))
    for peer in (a, b):
        if await peer.join(room) is None:
            ctx.got.append("could not join")
            return
    cid = f"shared-{ctx.tag}"
    ack_a = await a.chat(room, "from A", cid)
    mark = len(a.frames)
    ack_b = await b.chat(room, "from B", cid)
    delivered = await a.wait_for(is_kind("chat", text="from B"), 2.0, start=mark)
    id_a = ack_a.get("id") if ack_a and ack_a["type"] == "ack" else None
    id_b = ack_b.get("id") if ack_b and ack_b["type"] == "ack" else None
    if id_b is None:
        said = f"B got {ack_b.get('code') if ack_b else 'no answer'}"
    elif id_b == id_a:
        said = "B was acked with A's message id"
    else:
        said = "B was acked with an id of its own"
    ctx.got.append(f"A acked {id_a}; {said}; B's message "
                   f"{'delivered' if delivered else 'never delivered'}")


async def attack_connflood(ctx: Ctx) -> None:
    """10. Connection flood from one address: nothing limits connections per client,
    so one source can hold thousands of idle connections open at the front door."""
    host, port = host_port(ctx.front)
    times: list[float] = []
    probe_failures: list[str] = []
    stop = asyncio.Event()

    async def probe_once() -> None:
        start = time.monotonic()
        client = ChatClient(ctx.front, PROBE_SOURCE)
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await client.open()
                answer = await client.call("GET", "/")
            if answer.status == 200:
                times.append(time.monotonic() - start)
            else:
                probe_failures.append(str(answer.status))
        except NET_ERRORS as error:
            probe_failures.append(failure(error))
        finally:
            if client.conn is not None:
                client.conn.close()

    async def probe() -> None:
        while not stop.is_set():
            await probe_once()
            await asyncio.sleep(PROBE_EVERY_SECONDS)

    for _ in range(5):
        await probe_once()
    calm = sorted(times)
    times.clear()
    prober = asyncio.create_task(probe())
    loop = asyncio.get_running_loop()

    async def connect() -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        ctx.sockets.append(sock)
        sock.bind((ctx.source, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), CONNECT_TIMEOUT)
        return "open"

    n = ctx.count(FLOOD_CONNECTIONS)
    start = time.monotonic()
    opened = await gather_bounded(FLOOD_CONCURRENCY, [connect for _ in range(n)])
    ramp = time.monotonic() - start
    hold = ctx.seconds(FLOOD_HOLD_SECONDS, 2.0)
    await asyncio.sleep(hold)
    stop.set()
    await prober
    ends: Counter[str] = Counter()
    for sock, how in zip(ctx.sockets, opened, strict=True):
        if how != "open":
            continue
        try:
            head = sock.recv(64, socket.MSG_PEEK)
            words = head.split()
            ends["closed by the server" if not head else
                 f"answered HTTP {words[1].decode(errors='replace')}"
                 if head.startswith(b"HTTP/") and len(words) > 1 else "got data"] += 1
        except BlockingIOError:
            ends["still open"] += 1
        except OSError as error:
            ends[failure(error)] += 1
    ctx.got.append(f"{n} idle connections from {ctx.source} in {ramp:.1f} s: {tally(opened)}; "
                   f"after {hold:.0f} s: {tally(ends.elements())}")
    ctx.got.append(f"GET / from {PROBE_SOURCE}: before p50 {1000 * percentile(calm, 0.5):.1f} ms; "
                   f"during p50 {1000 * percentile(times, 0.5):.1f} ms, "
                   f"p99 {1000 * percentile(times, 0.99):.1f} ms, "
                   f"{len(probe_failures)} of {len(times) + len(probe_failures)} failed"
                   + (f" ({tally(probe_failures)})" if probe_failures else ""))


def session_cookie(answer: Response) -> str | None:
    for name, value in answer.headers:
        if name == "set-cookie" and value.startswith("jsessionid="):
            return value
    return None


async def login_with(ctx: Ctx, header: dict[str, str]) -> str:
    """Log in with an extra request header; whether the session cookie came back Secure."""
    client = ChatClient(ctx.front, ctx.source)
    await client.open()
    try:
        await client.call("GET", "/", extra=header)
        form = urllib.parse.urlencode({"user": ctx.user("hdr"),
                                       "_xsrf": client.jar.values.get("_xsrf", "")}).encode()
        answer = await client.call("POST", "/login", form, {
            "Content-Type": "application/x-www-form-urlencoded", **header})
    finally:
        if client.conn is not None:
            client.conn.close()
    cookie = session_cookie(answer)
    if cookie is None:
        return f"no session cookie (HTTP {answer.status})"
    secure = any(part.strip().lower() == "secure" for part in cookie.split(";")[1:])
    return "Secure session cookie" if secure else "session cookie not Secure"


async def attack_headers(ctx: Ctx) -> None:
    """11. What the front door lets through: /metrics answers anyone, the Server header
    names the server and version, and a client's own X-Scheme: https makes the app take
    plain HTTP for HTTPS (a Secure cookie; the scheme is the client's to choose)."""
    client = ChatClient(ctx.front, ctx.source)
    await client.open()
    try:
        metrics = await client.call("GET", "/metrics")
        page = await client.call("GET", "/")
    finally:
        if client.conn is not None:
            client.conn.close()
    lines = metrics.body.decode(errors="replace").count("\n") if metrics.status == 200 else 0
    ctx.got.append(f"/metrics via the front: HTTP {metrics.status}"
                   + (f" ({lines} lines)" if lines else ""))
    ctx.got.append(f"Server header: {page.header('server') or 'none'}")
    ctx.got.append(f"X-Scheme: https -> {await login_with(ctx, {'X-Scheme': 'https'})}")
    ctx.got.append(f"X-Forwarded-Proto: https -> "
                   f"{await login_with(ctx, {'X-Forwarded-Proto': 'https'})}")
    ctx.got.append(f"no such header -> {await login_with(ctx, {})}")


@dataclass(frozen=True)
class Attack:
    number: int
    name: str
    run: Callable[[Ctx], Coroutine[Any, Any, None]]
    prepare: Callable[[Ctx], Awaitable[None]] | None = None


ATTACKS = [
    Attack(1, "bodies", attack_bodies),
    Attack(2, "replay", attack_replay, fill_long_room),
    Attack(3, "redis", attack_redis),
    Attack(4, "history", attack_history, fill_long_room),
    Attack(6, "presence", attack_presence),
    Attack(7, "logout", attack_logout),
    Attack(8, "surrogate", attack_surrogate),
    Attack(9, "cid", attack_cid),
    Attack(10, "connflood", attack_connflood),
    Attack(11, "headers", attack_headers),
]
BASELINE = Attack(0, "baseline", attack_baseline)


# -- measuring one attack -----------------------------------------------------------


@dataclass
class Row:
    number: int
    name: str
    rss_before: float
    rss_peak_sum: float
    rss_peak_max: float
    rss_after: float
    redis_before: float
    redis_peak: float
    redis_after: float
    sent: int
    acked: int
    p50_ms: float
    p99_ms: float
    bystander_events: dict[str, int]
    got: str
    restarted: bool = False


def rss_mb_of(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += rss_bytes(pid)
    return total / MB


async def guard(ctx: Ctx, task: asyncio.Task[None], pids: list[int]) -> None:
    """Cancel the attack if the chat processes' RSS passes the cap: the box must never swap."""
    while not task.done():
        rss = rss_mb_of(pids)
        if rss > ctx.args.rss_cap_mb:
            ctx.got.append(f"STOPPED: chat RSS {rss:.0f} MB passed --rss-cap-mb "
                           f"{ctx.args.rss_cap_mb:.0f}")
            task.cancel()
            return
        await asyncio.sleep(0.1)


async def start_fresh(ctx: Ctx, monitor: MonitorHandle) -> bool:
    """Restart the chat processes if an earlier attack left memory behind (`--fresh`),
    so each row starts from the same RSS; True if they were restarted."""
    restart = ctx.site.restart
    if restart is None or ctx.args.fresh == "never":
        return False
    grown = rss_mb_of(ctx.site.pids()) - ctx.fresh_rss_mb
    if ctx.args.fresh == "auto" and grown <= FRESH_SLACK_MB:
        return False
    print(f"hostile: restarting the chat processes ({grown:+.0f} MB since fresh) …", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, restart)
    await monitor.ask("pids", ctx.site.pids())
    await monitor.ask("ready")  # the bystander is back on instance 1
    return True


async def measure(ctx: Ctx, monitor: MonitorHandle, attack: Attack) -> Row:
    print(f"hostile: {attack.number} {attack.name} …", flush=True)
    restarted = await start_fresh(ctx, monitor)
    ctx.source = f"127.0.0.{ATTACK_SOURCE_BASE + attack.number}"
    if attack.prepare is not None:
        await attack.prepare(ctx)
    pids = ctx.site.pids()
    await monitor.ask("pids", pids)
    before = await monitor.ask("begin")
    ctx.got = []
    task = asyncio.create_task(attack.run(ctx))
    watchdog = asyncio.create_task(guard(ctx, task, pids))
    done, _ = await asyncio.wait({task}, timeout=ctx.args.attack_timeout)
    if not done:
        ctx.got.append(f"STOPPED after --attack-timeout {ctx.args.attack_timeout:.0f} s")
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as error:  # noqa: BLE001 - a tool: report it in the row and go on
        ctx.got.append(f"tool error: {type(error).__name__}: {error}")
    watchdog.cancel()
    await asyncio.gather(watchdog, return_exceptions=True)
    peak = await monitor.ask("end")
    ctx.close_all()
    await asyncio.sleep(ctx.args.settle)
    after = await monitor.ask("after")
    now = ctx.site.pids()
    if peak["dead"] or now != pids:
        ctx.got.append(f"CHAT PROCESS GONE: pids {pids} -> {now}")
    return Row(
        number=attack.number, name=attack.name,
        rss_before=before["rss_sum"] / MB, rss_peak_sum=peak["rss_sum"] / MB,
        rss_peak_max=peak["rss_max"] / MB, rss_after=after["rss_sum"] / MB,
        redis_before=before["redis"] / MB, redis_peak=peak["redis"] / MB,
        redis_after=after["redis"] / MB,
        sent=after["sent"], acked=after["acked"], p50_ms=after["p50_ms"], p99_ms=after["p99_ms"],
        bystander_events=after["events"], got="; ".join(ctx.got), restarted=restarted)


def selected(only: str) -> list[Attack]:
    if not only:
        return ATTACKS
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    known = {a.name for a in ATTACKS} | {str(a.number) for a in ATTACKS}
    unknown = wanted - known
    if unknown:
        sys.exit(f"hostile: unknown attack {', '.join(sorted(unknown))}; "
                 f"one of {', '.join(a.name for a in ATTACKS)} (or their numbers)")
    return [a for a in ATTACKS if a.name in wanted or str(a.number) in wanted]


async def run_attacks(site: Site, monitor: MonitorHandle, args: argparse.Namespace) -> list[Row]:
    redis: Redis = Redis.from_url(site.redis_url)
    ctx = Ctx(site, redis, args)
    ctx.fresh_rss_mb = rss_mb_of(site.pids())
    rows: list[Row] = []
    try:
        for attack in [BASELINE, *selected(args.only)]:
            rows.append(await measure(ctx, monitor, attack))
    finally:
        ctx.close_all()
        await redis.aclose()
    return rows


# -- the table ------------------------------------------------------------------------


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def table(rows: list[Row]) -> str:
    head = ("| # | attack | chat RSS MB before | peak sum | peak one | after | "
            "Redis MB before | peak | after | bystander p50 ms | p99 ms | unacked | "
            "attacker got |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        unacked = f"{r.sent - r.acked}/{r.sent}"
        if r.bystander_events:
            unacked += " (" + ", ".join(f"{k} x{v}" for k, v in
                                        sorted(r.bystander_events.items())) + ")"
        name = r.name + ("*" if r.restarted else "")
        lines.append(
            f"| {r.number} | {name} | {r.rss_before:.1f} | {r.rss_peak_sum:.1f} | "
            f"{r.rss_peak_max:.1f} | {r.rss_after:.1f} ({r.rss_after - r.rss_before:+.1f}) | "
            f"{r.redis_before:.1f} | {r.redis_peak:.1f} | {r.redis_after:.1f} | "
            f"{ms(r.p50_ms)} | {ms(r.p99_ms)} | {unacked} | {r.got} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[Row]:
    """Start (or find) the stack, run the attacks one after the other, print the table."""
    raise_nofile()
    selected(args.only)  # an unknown name fails before a stack is started
    with open_site(args) as site:
        pids = site.pids()
        print(f"hostile: front {site.url}, instances {', '.join(site.instance_urls)} "
              f"(pids {pids}), Redis {site.redis_url}; scale {args.scale:g}", flush=True)
        monitor = MonitorHandle(site, args.interval)
        try:
            rows = asyncio.run(run_attacks(site, monitor, args))
        finally:
            monitor.stop()
    print()
    print(f"chat RSS: sum over the {len(pids)} chat processes (peak one: the largest), "
          f"sampled every {SAMPLE_SECONDS * 1000:.0f} ms during the attack; after: "
          f"{args.settle:g} s after it, its sockets closed. Redis: INFO used_memory. "
          f"bystander: chat ack round trip, one message every {args.interval * 1000:.0f} ms "
          "on instance 1 via HAProxy; unacked: of those sent during the attack. "
          "*: the chat processes were restarted first (an earlier attack had left "
          f"more than {FRESH_SLACK_MB} MB behind).")
    print(table(rows))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = ", ".join(f"{a.number} {a.name}" for a in ATTACKS)
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n")[0],
        epilog=f"attacks: {names}")
    parser.add_argument("--only", default="", metavar="ATTACK[,ATTACK]",
                        help="run only these attacks (names or numbers); default: all")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplier for every size, count and duration (e.g. 0.02: tiny)")
    parser.add_argument("--instances", type=int, default=2,
                        help="chat processes of the stack started here")
    parser.add_argument("--url", default="", help="attack this running front door instead")
    parser.add_argument("--redis-url", default="", help="with --url: the stack's Redis")
    parser.add_argument("--instance-urls", default="",
                        help="with --url: the instances' own URLs, instance 1 first "
                             "(default: found in /proc)")
    parser.add_argument("--body-mb", type=float, default=64.0,
                        help="size of each POST body of attack 1 (times --scale)")
    parser.add_argument("--fill", choices=("chat", "xadd"), default="chat",
                        help="fill the long room through the front door as many users (what "
                             "an attacker can do), or by XADD into Redis")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds after an attack before the 'after' sample")
    parser.add_argument("--rss-cap-mb", type=float, default=3000.0,
                        help="stop an attack when the chat processes' RSS sum passes this")
    parser.add_argument("--attack-timeout", type=float, default=120.0,
                        help="stop an attack that runs longer than this many seconds")
    parser.add_argument("--fresh", choices=("auto", "always", "never"), default="auto",
                        help="restart the chat processes before an attack (a stack of our "
                             "own only): auto, when an earlier attack left more than "
                             f"{FRESH_SLACK_MB} MB behind")
    parser.add_argument("--interval", type=float, default=0.1,
                        help="seconds between the bystander's messages")
    return parser.parse_args(argv)


def main() -> None:
    run(parse_args())


if __name__ == "__main__":
    main()
