"""A load-generator process for bench/crowd: tens of thousands of idle chatfleet sockets.

Each socket is its own login on one keep-alive connection (bench/rawws:
`GET /`, `POST /login`, the `/ws` upgrade) and counts as open once the
lobby's presence arrived. A worker follows its parent's orders over a pipe,
one at a time:

- ("open", "heads" | "rest"): open the sockets that are their name's first
  ("heads": each announces `joined` to the whole lobby, so they go while the
  lobby is small), or all the others; answers an `Opened`;
- ("count",): a `Census`: sockets still open, lobby churn heard so far;
- ("join", room): this worker's room members join it; answers how many did;
- ("arm",): the members' counts start from zero (every worker, before anyone
  publishes: a worker slow to take the next order must not drop deliveries);
- ("fanout", room, rate, seconds, drain): the publisher (if here) says `rate`
  messages a second for `seconds`; every member counts what it receives
  until `drain` seconds pass without any; answers a `Fanout`;
- ("stop",).

A chat text starts `~SEND_NS~` (time.monotonic_ns, one clock for every
process of the machine), so a member reads its latency without a JSON parse.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any

from bench.rawws import ChatClient, Connection, HttpError

LOBBY_PRESENCE = '{"type":"presence","room":"lobby"'
# A name's first socket here or its last one gone: every lobby member hears it.
LOBBY_CHURN = ('{"type":"joined","room":"lobby"', '{"type":"left","room":"lobby"')
# Setting up one socket (three requests and the lobby join) gives up after this long.
READY_TIMEOUT_SECONDS = 60.0
# A socket refused while the instances are busy is tried again after a pause.
OPEN_TRIES = 3
RETRY_PAUSE_SECONDS = 1.0
PADDING = "x" * 40  # after the marker: a short chat line


@dataclass
class Opened:
    sockets: int  # opened now
    seconds: float
    failures: Counter[str] = field(default_factory=Counter)  # sockets given up, by error kind
    retries: Counter[str] = field(default_factory=Counter)  # tries failed, by error kind
    churn: int = 0  # lobby joined/left frames heard meanwhile (filled in by the parent)


@dataclass
class Fanout:
    sent: int = 0
    received: int = 0
    stray: int = 0  # chat frames without our marker
    latencies_ms: list[float] = field(default_factory=list)
    per_member: list[int] = field(default_factory=list)  # messages each member received


@dataclass
class Census:
    open: int = 0  # sockets open now
    churn: int = 0  # lobby `joined` and `left` frames received so far, by all sockets


@dataclass
class CrowdPlan:
    url: str  # HAProxy's front
    instances: int
    first: int  # global index of this worker's first socket
    count: int
    sockets_per_user: int
    sources: list[str]  # source addresses, socket i leaves from sources[i % len]
    member_every: int  # socket i joins the room if i % member_every == 0 (0: none)
    concurrency: int  # sockets being set up at once by this worker


class Tally:
    """What this worker's room members received (one object, shared)."""

    def __init__(self) -> None:
        self.received = 0
        self.stray = 0
        self.last_at = 0.0
        self.latencies_ns: list[int] = []


class CrowdSocket:
    """One idle client; as a room member it also times the room's chat frames."""

    __slots__ = ("client", "user", "census", "conn", "waiting_for", "ready", "tally")

    def __init__(self, client: ChatClient, user: str, census: Census) -> None:
        self.client = client
        self.user = user
        self.census = census  # the worker's, shared
        self.conn: Connection | None = None
        self.waiting_for = ""
        self.ready: asyncio.Future[None] | None = None
        self.tally: Tally | None = None  # set for room members

    def on_text(self, text: str) -> None:
        tally = self.tally
        if tally is not None and text.startswith('{"type":"chat"'):
            i = text.find('"text":"~')
            if i < 0:
                tally.stray += 1
                return
            j = text.find("~", i + 9)
            tally.latencies_ns.append(time.monotonic_ns() - int(text[i + 9:j]))
            tally.received += 1
            tally.last_at = time.monotonic()
        elif self.ready is not None and text.startswith(self.waiting_for):
            if not self.ready.done():
                self.ready.set_result(None)
        elif text.startswith(LOBBY_CHURN):
            self.census.churn += 1

    def expect(self, prefix: str) -> asyncio.Future[None]:
        """The frame starting with `prefix` to wait for: asked before the request
        that brings it, which may come in the same read as the answer before it."""
        self.waiting_for = prefix
        self.ready = asyncio.get_running_loop().create_future()
        return self.ready

    async def wait(self, ready: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(ready, READY_TIMEOUT_SECONDS)
        finally:
            self.ready = None

    async def open(self) -> None:
        self.close()
        ready = self.expect(LOBBY_PRESENCE)
        self.conn = await self.client.open(self.on_text)
        await self.client.login(self.user)
        await self.client.upgrade()
        await self.wait(ready)

    async def join(self, room: str) -> None:
        assert self.conn is not None
        ready = self.expect(f'{{"type":"presence","room":"{room}"')
        self.conn.send_text(json.dumps({"type": "join", "room": room}))
        await self.wait(ready)

    def say(self, room: str, text: str) -> None:
        assert self.conn is not None
        self.conn.send_text(json.dumps({"type": "chat", "room": room, "text": text}))

    @property
    def open_now(self) -> bool:
        return self.conn is not None and not self.conn.closed.done()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def make_sockets(plan: CrowdPlan,
                 census: Census) -> tuple[list[CrowdSocket], list[CrowdSocket]]:
    """This worker's sockets: (heads, rest). Socket i sticks to instance i mod N, and
    names come in groups of `sockets_per_user` per instance (bench/idle's scheme)."""
    heads: list[CrowdSocket] = []
    rest: list[CrowdSocket] = []
    for i in range(plan.first, plan.first + plan.count):
        instance = i % plan.instances
        group, place = divmod(i // plan.instances, plan.sockets_per_user)
        client = ChatClient(plan.url, plan.sources[i % len(plan.sources)], f"chat{instance + 1}")
        sock = CrowdSocket(client, f"crowd{instance + 1}x{group}", census)
        if plan.member_every and i % plan.member_every == 0:
            sock.tally = Tally()
        (rest if place else heads).append(sock)
    return heads, rest


async def open_all(sockets: list[CrowdSocket], concurrency: int) -> Opened:
    """Open `sockets`, `concurrency` at a time; count failures by kind (error and message)."""
    started = time.monotonic()
    result = Opened(0, 0.0)
    queue = iter(sockets)

    async def runner() -> None:
        for sock in queue:
            for attempt in range(OPEN_TRIES):
                try:
                    await sock.open()
                    result.sockets += 1
                    break
                except (OSError, TimeoutError, HttpError, ConnectionError) as error:
                    kind = f"{type(error).__name__}: {error}"[:80]
                    result.retries[kind] += 1
                    if attempt < OPEN_TRIES - 1:
                        await asyncio.sleep(RETRY_PAUSE_SECONDS)
                        continue
                    sock.close()
                    result.failures[kind] += 1

    await asyncio.gather(*(runner() for _ in range(concurrency)))
    result.seconds = time.monotonic() - started
    return result


async def fanout(members: list[CrowdSocket], publisher: CrowdSocket | None, room: str,
                 rate: float, seconds: float, drain: float) -> Fanout:
    """Publish (if the publisher is here) and count the members' deliveries (since `arm`)."""
    tallies = [m.tally for m in members if m.tally is not None]
    result = Fanout()
    started = time.monotonic()
    if publisher is not None and rate > 0:
        while result.sent < rate * seconds:
            due = started + result.sent / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            publisher.say(room, f"~{time.monotonic_ns()}~ {PADDING}")
            result.sent += 1
    await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
    # Deliveries are over once none came for `drain` seconds.
    while tallies:
        quiet_for = time.monotonic() - max(t.last_at for t in tallies)
        if quiet_for >= drain:
            break
        await asyncio.sleep(drain - quiet_for)
    for tally in tallies:
        result.received += tally.received
        result.per_member.append(tally.received)
        result.stray += tally.stray
        result.latencies_ms += [ns / 1e6 for ns in tally.latencies_ns]
    return result


async def serve(plan: CrowdPlan, pipe: Pipe) -> None:
    census = Census()
    heads, rest = make_sockets(plan, census)
    every = heads + rest
    members = [s for s in every if s.tally is not None]
    # The publisher is socket 0, a room member, in the first worker.
    publisher = members[0] if plan.first == 0 and members else None
    loop = asyncio.get_running_loop()
    pipe.send("ready")
    try:
        while True:
            order: tuple[Any, ...] = await loop.run_in_executor(None, pipe.recv)
            if order[0] == "open":
                pipe.send(await open_all(heads if order[1] == "heads" else rest, plan.concurrency))
            elif order[0] == "count":
                census.open = sum(1 for s in every if s.open_now)
                pipe.send(census)
            elif order[0] == "join":
                joined = await asyncio.gather(*(m.join(order[1]) for m in members if m.open_now),
                                              return_exceptions=True)
                pipe.send(sum(1 for j in joined if j is None))
            elif order[0] == "arm":
                for m in members:
                    m.tally = Tally()
                pipe.send(len(members))
            elif order[0] == "fanout":
                _, room, rate, seconds, drain = order
                pipe.send(await fanout(members, publisher, room, rate, seconds, drain))
            else:
                break
    finally:
        for sock in every:
            sock.close()


def worker_main(plan: CrowdPlan, pipe: Pipe) -> None:
    try:
        asyncio.run(serve(plan, pipe))
    except Exception as error:  # reported to the parent, which raises it
        pipe.send(f"error: {type(error).__name__}: {error}")
