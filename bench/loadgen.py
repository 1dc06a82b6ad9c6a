"""Load-generator workers for bench/fanout: many chat clients per process, on raw asyncio.

One client code for both servers: a hand-written WebSocket client on
`asyncio.Protocol` (the HTTP upgrade by hand, unmasked server frames parsed by
hand, what it sends masked; no compression offered) plus two small dialects
that say how to log in, join and say something:

- chatfleet: `POST /login` through HAProxy (pinned to instance i mod N by
  HAProxy's `chatfleet_server` cookie), then `/ws` with the `jsessionid`
  cookie; JSON frames (docs/protocol.md).
- socketio: Engine.IO v4 over the websocket transport only
  (`/socket.io/?EIO=4&transport=websocket`): `0{..}` open, `40{"user":..}`
  connect with the name as auth, `40{"sid":..}`, `2` ping answered `3`,
  events as `42["event",data]`, the join acknowledged as `430[..]`.

A chat text starts `~STEP~SEND_NS~` (time.monotonic_ns, the same clock in every
process of the machine), so each receiver measures latency with three
`bytes.find` calls and no JSON parse, and counts only the current step's
messages. A worker follows orders from the parent over a pipe (publish at a
rate for a while, report) and reports its own CPU time, so the parent can
tell whether the clients or the server were the limit.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from chatclient import HttpSession

CONNECT_BATCH = 50  # clients connecting at once per worker
SETUP_TIMEOUT_SECONDS = 30.0  # from TCP connect to joined, per client
# A step's deliveries are over when none came for this long. At 0.5 s a server
# process starved by a busy box (load 10 and more on 2 cores) paused longer
# than that before its last deliveries, which were then counted lost, in
# chatfleet and the peers alike.
QUIET_SECONDS = 2.0
PADDING = "x" * 40  # chat text after the marker: a short chat line

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
TILDE = ord("~")
EIO_PING = b"2"


@dataclass
class WorkerPlan:
    protocol: str  # "chatfleet" or "socketio"
    url: str  # HAProxy's front
    instances: int
    rooms: list[str]
    first_client: int  # global index of this worker's first client
    clients: int
    publishers: int  # how many of this worker's clients publish (round-robin over rooms)


@dataclass
class StepReport:
    received: int = 0  # this step's chat messages received, by all clients
    sent_by_room: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0  # this worker's own user+system CPU during the step
    stray: int = 0  # chat messages of an earlier step that arrived late
    closed: int = 0  # sockets the server closed


class Tally:
    """What one worker's clients received during the current step (one object, shared)."""

    def __init__(self) -> None:
        self.step = 0
        self.frames = 0  # every message, of any kind: the server is still busy
        self.received = 0
        self.stray = 0
        self.latencies_ns: list[int] = []
        # Steps already reported, and latencies of chats of a step this worker
        # has not started yet: another worker got its order first and its
        # clients published before this one counted (they are that step's).
        self.done: set[int] = set()
        self.early: dict[int, list[int]] = {}


# -- the WebSocket ----------------------------------------------------------------


def mask_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One client frame: FIN, `opcode`, masked with a random key (RFC 6455 5.3)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4)
    stream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return head + key + masked


def upgrade_request(host: str, path: str, headers: dict[str, str]) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class WebSocket(asyncio.Protocol):
    """A client WebSocket: hands every text message (bytes) to `on_text`."""

    def __init__(self, request: bytes, on_text: Callable[[bytes], None]) -> None:
        self.request = request
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.closed = False
        self.buf = b""
        self.fragments: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the upgrade: {exc}"))

    def send(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(mask_frame(payload, opcode))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            status = data[:data.find(b"\r\n")]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                self.close()
                return
            self.upgraded = True
            self.opened.set_result(None)
            data = data[end + 4:]
        self.buf = data[self._frames(data):]

    def _frames(self, data: bytes) -> int:
        """Handle every whole frame in `data`; return where the unfinished one starts."""
        pos, n = 0, len(data)
        while n - pos >= 2:
            b0, length, head = data[pos], data[pos + 1] & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
            end = pos + head + length
            if end > n:
                break
            self._frame(b0, data[pos + head:end])
            pos = end
        return pos

    def _frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        if opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
            if not b0 & 0x80:  # a fragment: wait for the rest
                self.fragments.append(payload)
                return
            if self.fragments:
                payload = b"".join([*self.fragments, payload])
                self.fragments = []
            self.on_text(payload)
        elif opcode == OP_PING:
            self.send(payload, OP_PONG)
        elif opcode == OP_CLOSE:
            self.send(payload[:2], OP_CLOSE)
            self.close()


# -- one chat user ------------------------------------------------------------------


class Client:
    """One user: connects, joins its room, then only counts what it receives."""

    def __init__(self, index: int, room: str, plan: WorkerPlan, tally: Tally) -> None:
        self.index = index
        self.name = f"load{index}"
        self.room = room
        self.plan = plan
        self.tally = tally
        self.ws: WebSocket | None = None
        # While setting up, every message goes here; afterwards only the marker is read.
        self.inbox: asyncio.Queue[bytes] | None = asyncio.Queue()

    def on_text(self, payload: bytes) -> None:
        self.tally.frames += 1
        i = payload.find(b"~")
        if i < 0:
            if payload == EIO_PING and self.ws is not None:
                self.ws.send(b"3")  # Engine.IO pong
            elif self.inbox is not None:
                self.inbox.put_nowait(payload)
            return
        j = payload.find(b"~", i + 1)
        k = payload.find(b"~", j + 1)
        tally = self.tally
        step = int(payload[i + 1:j])
        latency = time.monotonic_ns() - int(payload[j + 1:k])
        if step != tally.step:
            if step in tally.done:
                tally.stray += 1
            else:
                tally.early.setdefault(step, []).append(latency)
            return
        tally.latencies_ns.append(latency)
        tally.received += 1

    async def expect(self, match: Callable[[bytes], bool]) -> bytes:
        assert self.inbox is not None
        while True:
            payload = await self.inbox.get()
            if match(payload):
                return payload

    async def open(self, path: str, headers: dict[str, str]) -> None:
        parts = urllib.parse.urlsplit(self.plan.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        request = upgrade_request(parts.netloc, path, headers)
        loop = asyncio.get_running_loop()
        _, self.ws = await loop.create_connection(lambda: WebSocket(request, self.on_text),
                                                  host, port)
        await self.ws.opened

    async def connect(self) -> None:
        dialect = CONNECT[self.plan.protocol]
        await asyncio.wait_for(dialect(self), SETUP_TIMEOUT_SECONDS)
        self.inbox = None

    def say(self, text: str) -> None:
        assert self.ws is not None
        self.ws.send(ENCODE_CHAT[self.plan.protocol](self.room, text))


async def connect_chatfleet(client: Client) -> None:
    """Log in (pinned to instance index mod N), open /ws, join the room, wait for its presence."""
    http = HttpSession(client.plan.url)
    http.cookies["chatfleet_server"] = f"chat{1 + client.index % client.plan.instances}"
    try:
        answer = await http.login(client.name)
        if answer.code != 302:
            raise ConnectionError(f"login answered {answer.code}")
        cookie = http.cookie_header()
    finally:
        http.close()
    await client.open("/ws", {"Cookie": cookie, "Origin": client.plan.url})
    assert client.ws is not None
    client.ws.send(json.dumps({"type": "join", "room": client.room}).encode())

    def joined(payload: bytes) -> bool:
        f = json.loads(payload)
        return bool(f.get("type") == "presence" and f.get("room") == client.room)

    await client.expect(joined)


async def connect_socketio(client: Client) -> None:
    """Engine.IO open, Socket.IO connect with the name as auth, join with an acknowledgement."""
    await client.open("/socket.io/?EIO=4&transport=websocket", {})
    assert client.ws is not None
    await client.expect(lambda p: p.startswith(b"0{"))
    client.ws.send(b"40" + json.dumps({"user": client.name}).encode())
    await client.expect(lambda p: p.startswith(b"40"))
    client.ws.send(b"420" + json.dumps(["join", {"room": client.room}]).encode())
    answer = await client.expect(lambda p: p.startswith(b"430"))
    if json.loads(answer[3:]) == [None]:
        raise ConnectionError("join refused")


def chatfleet_chat(room: str, text: str) -> bytes:
    return json.dumps({"type": "chat", "room": room, "text": text}).encode()


def socketio_chat(room: str, text: str) -> bytes:
    return b"42" + json.dumps(["chat", {"room": room, "text": text}]).encode()


CONNECT = {"chatfleet": connect_chatfleet, "socketio": connect_socketio}
ENCODE_CHAT = {"chatfleet": chatfleet_chat, "socketio": socketio_chat}


# -- a worker ---------------------------------------------------------------------


async def publish(clients: list[Client], rate: float, seconds: float,
                  step: int) -> dict[str, int]:
    """Send `rate` messages a second, spread over `clients`, for `seconds`; count per room."""
    by_room: dict[str, int] = {}
    if not clients or rate <= 0:
        return by_room
    interval = 1.0 / rate
    start = time.monotonic()
    sent = 0
    while True:
        due = start + sent * interval
        if due - start >= seconds:
            return by_room
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        client = clients[sent % len(clients)]
        client.say(f"~{step}~{time.monotonic_ns()}~ {PADDING}")
        by_room[client.room] = by_room.get(client.room, 0) + 1
        sent += 1


async def quiet(tally: Tally, limit: float) -> None:
    """Return once no message at all came for QUIET_SECONDS, or after `limit`.

    Any message counts, not only this step's chats: a server still working
    off a backlog (say, `joined` notices of the setup) may send the step's
    chats after it, and those are late, not lost.
    """
    deadline = time.monotonic() + limit
    seen = -1
    while time.monotonic() < deadline and tally.frames != seen:
        seen = tally.frames
        await asyncio.sleep(QUIET_SECONDS)


async def run_step(clients: list[Client], publishers: list[Client], tally: Tally,
                   order: tuple[Any, ...]) -> StepReport:
    _, step, rate, seconds, drain = order
    early = tally.early.pop(step, [])
    tally.step, tally.received, tally.stray, tally.latencies_ns = step, len(early), 0, early
    cpu_before = sum(os.times()[:2])
    started = time.monotonic()
    sent_by_room = await publish(publishers, rate, seconds, step)
    # Listen for the whole step, then until deliveries stop (at most `drain` s).
    await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
    await quiet(tally, drain)
    tally.done.add(step)
    return StepReport(
        received=tally.received,
        sent_by_room=sent_by_room,
        latencies_ms=[x / 1e6 for x in tally.latencies_ns],
        cpu_seconds=sum(os.times()[:2]) - cpu_before,
        stray=tally.stray,
        closed=sum(1 for c in clients if c.ws is None or c.ws.closed),
    )


async def serve(plan: WorkerPlan, pipe: Connection) -> None:
    tally = Tally()
    clients = [Client(i, plan.rooms[i % len(plan.rooms)], plan, tally)
               for i in range(plan.first_client, plan.first_client + plan.clients)]
    try:
        for start in range(0, len(clients), CONNECT_BATCH):
            await asyncio.gather(*(c.connect() for c in clients[start:start + CONNECT_BATCH]))
        pipe.send("ready")
        loop = asyncio.get_running_loop()
        while True:
            order = await loop.run_in_executor(None, pipe.recv)
            if order[0] == "stop":
                break
            pipe.send(await run_step(clients, clients[:plan.publishers], tally, order))
    finally:
        for c in clients:
            if c.ws is not None:
                c.ws.close()


def worker_main(plan: WorkerPlan, pipe: Connection) -> None:
    try:
        asyncio.run(serve(plan, pipe))
    except Exception as error:  # reported to the parent, which raises it
        pipe.send(f"error: {type(error).__name__}: {error}")
