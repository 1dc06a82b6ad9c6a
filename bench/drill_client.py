"""A scripted chat user for the failover drill: reconnects as static/chat/connection.js does.

On any close it backs off with full jitter (first try within FIRST_RETRY_SECONDS,
doubling to MAX_RETRY_SECONDS; a close 1012 comes back at once with up to
DRAIN_JITTER_SECONDS of jitter). Each try asks `GET /session` first (fresh
cookies), then opens `/ws?after=<last lobby id>` and re-joins its room with
`after` = the last id it saw there. Sends wait in an outbox, keyed by `cid`,
until acknowledged, and are resent with the same `cid` after every reconnect.

Unlike the browser client it never drops a repeat on its own side: it writes down every
chat id it receives, in order, so the drill can count gaps, repeats and
reordering exactly as a user would have seen them without client-side help.

Private rooms (bench/private.py): a member joins its private rooms like any
other room and may write to them; a non-member keeps trying to get in
(`probe`: join, join with `after`, history, chat) and must be refused. Every
frame of a watched (private) room is written down with the socket it came on
and when, so the drill can tell what a user was allowed to read at that time.
A client that learns it was removed from a room (a `kicked` frame, or the
drill tells it) stops following the room and probes it instead. The owner
sends moderation `order`s, resent until answered `moderated`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tornado.websocket import WebSocketClosedError

from chatclient import ChatSocket, HttpSession

LOBBY = "lobby"

# static/chat/connection.js: first try within about half a second, never wait longer than
# ten seconds between tries, and a draining instance (1012) is left at once but
# not by everybody in the same instant.
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 10.0
DRAIN_JITTER_SECONDS = 1.0
# static/chat/connection.js: after `unavailable` the client tries again two seconds later.
RETRY_AFTER_ERROR_SECONDS = 2.0
# A second 401 from the probe means the session is really gone (the browser client asks
# twice: another tab may just have regenerated the shared cookie).
REPROBE_AFTER_401_SECONDS = 0.2

CLOSE_DRAINING = 1012
CLOSE_SESSION_ENDED = 4401

# Every HTTP request and WebSocket handshake gives up after this long.
HTTP_TIMEOUT_SECONDS = 10.0
# The server sends `hello` the moment a socket opens; a socket without one is broken.
HELLO_TIMEOUT_SECONDS = 10.0
# Loop bounds: the client's deadline ends every loop long before these counts.
MAX_CONNECT_TRIES = 10_000
MAX_LOGIN_TRIES = 30
LOGIN_RETRY_SECONDS = 1.0

# Errors after which the browser client re-joins and resends (nothing was stored).
RETRYABLE_ERRORS = frozenset({"unavailable", "not_joined", "rate_limited"})

# What a non-member tries, in turn, on a room it may not read: each must be
# answered `forbidden` (docs/protocol.md: Rooms, roles and moderation).
PROBES = ("join", "join after", "history", "chat")

StreamKey = tuple[int, int]
OrderKey = tuple[str, str, str]  # (action, room, user) of a moderation frame


def stream_key(msg_id: str) -> StreamKey:
    """`"1700000000000-3"` -> `(1700000000000, 3)`, comparable like Redis compares ids."""
    ms, _, seq = msg_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class RoomLog:
    """What one client saw of one room."""

    ids: list[str] = field(default_factory=list)  # every chat id received, repeats included
    last: str | None = None  # the highest id received: where a resume starts
    last_key: StreamKey = (0, 0)

    def record(self, msg_id: str) -> None:
        self.ids.append(msg_id)
        key = stream_key(msg_id)
        if key > self.last_key:
            self.last_key = key
            self.last = msg_id


@dataclass
class RoomEvent:
    """A frame of a watched room: `kind` chat, presence, history or kicked."""

    kind: str
    room: str
    seq: int  # the client's frame counter: the order frames arrived in
    at: float  # monotonic time it was read
    sock: int  # the socket it came on (SocketLog.no)
    count: int = 1  # chat messages it carried (a history frame: its messages)


@dataclass
class SocketLog:
    """One socket that reached `hello`."""

    no: int
    hello_at: float
    rooms: list[str]  # hello.rooms
    closed_at: float | None = None


class DrillClient:
    """One user: logs in, stays in `lobby` plus its own room (and its private
    rooms), talks, and survives failures."""

    def __init__(self, base_url: str, user: str, room: str, deadline: float, *,
                 private: Sequence[str] = (), probe: Sequence[str] = (),
                 writes_private: bool = True, watch: Sequence[str] = ()) -> None:
        self.base_url = base_url
        self.user = user
        self.room = room  # its public room (may be the lobby)
        # The rooms it follows: joined (with `after`) on every connect.
        self.rooms = ([LOBBY] if room == LOBBY else [LOBBY, room]) + list(private)
        # The rooms it writes to, in turn.
        self.writes = [room] + (list(private) if writes_private else [])
        self.probe_rooms = list(probe)  # rooms it may not read, and tries to
        self.watch = frozenset(watch) | set(private) | set(probe)
        self.deadline = deadline  # monotonic time after which every loop ends
        self.http = HttpSession(base_url)
        self.logs = {name: RoomLog() for name in self.rooms}
        # cid -> (room, text), oldest first; an entry leaves only with its ack.
        self.outbox: dict[str, tuple[str, str]] = {}
        self.created: dict[str, str] = {}  # every cid made -> its room
        self.acks: dict[str, str] = {}  # cid -> acknowledged id
        self.ack_conflicts = 0  # a cid acknowledged with two different ids
        self.reconnects = 0  # sockets lost while running
        self.reconnect_seconds: list[float] = []  # close -> back live in its room
        self.relogins = 0  # the session was gone: logged in again
        self.connect_failures = 0  # tries that did not reach `hello`
        self.errors: Counter[str] = Counter()  # error frames, close codes, failed tries
        self.instances: list[str] = []  # every instance it was served by, in order
        self.ready = asyncio.Event()  # set once it is first live in all its rooms
        # Private rooms: what came of watched rooms, on which socket.
        self.events: list[RoomEvent] = []
        self.sockets: list[SocketLog] = []
        self.removed: dict[str, float] = {}  # room -> when it learned it is out
        self.probes_sent = 0
        self.probes_acked = 0  # a probe chat acknowledged: it got in
        # Moderation orders (the owner): sent until answered `moderated`.
        self.orders: dict[OrderKey, dict[str, Any]] = {}
        self.order_tries: Counter[OrderKey] = Counter()
        self.order_last_sent: dict[OrderKey, float] = {}
        self.answered: dict[OrderKey, float] = {}  # key -> when `moderated` came
        self.held_seconds = 0.0  # kept offline on purpose (the drill's script)
        self._held_at: float | None = None
        self._resume = asyncio.Event()
        self._resume.set()
        self._frames = 0
        self._write_turn = 0
        self._probe_turn = 0
        self._seq = 0
        self._attempt = 0
        self._stopping = asyncio.Event()
        self._sock: ChatSocket | None = None
        self._online = False
        self._joined: set[str] = set()  # rooms confirmed (presence) on the current socket
        self._closed_at: float | None = None  # when the current outage began
        self._retry: asyncio.Task[None] | None = None
        self._probed_401 = False

    # -- what the drill asks of it -----------------------------------------

    def say(self) -> None:
        """Type one message in its next room: into the outbox, and out at once when online."""
        self._seq += 1
        cid = f"{self.user}.{self._seq}"
        text = f"{cid} drill"
        room = self.writes[self._write_turn % len(self.writes)]
        self._write_turn += 1
        self.outbox[cid] = (room, text)
        self.created[cid] = room
        if self._online:
            self._send_chat(cid)

    def probe(self) -> None:
        """Try the next way into the next room it may not read (each must be refused)."""
        if not self.probe_rooms or not self._online or self._sock is None:
            return
        turn = self._probe_turn
        self._probe_turn += 1
        room = self.probe_rooms[turn % len(self.probe_rooms)]
        kind = PROBES[(turn // len(self.probe_rooms)) % len(PROBES)]
        frame: dict[str, Any]
        if kind == "join":
            frame = {"type": "join", "room": room}
        elif kind == "join after":
            log = self.logs.get(room)
            frame = {"type": "join", "room": room,
                     "after": log.last if log and log.last else "0-0"}
        elif kind == "history":
            frame = {"type": "history", "room": room}
        else:
            cid = f"{self.user}.probe{turn}"
            frame = {"type": "chat", "room": room, "text": f"{cid} probe", "cid": cid}
        self.probes_sent += 1
        self._write(self._sock, frame)

    def remove(self, room: str) -> None:
        """It is out of `room` (kicked or banned): stop following it, keep trying it."""
        if room in self.removed:
            return
        self.removed[room] = time.monotonic()
        if room in self.rooms:
            self.rooms.remove(room)
        if room in self.writes and len(self.writes) > 1:
            self.writes.remove(room)
        if room not in self.probe_rooms:
            self.probe_rooms.append(room)
        self._joined.discard(room)

    def order(self, frame: dict[str, Any]) -> OrderKey:
        """A moderation frame, sent now if online and again until it is answered."""
        key: OrderKey = (str(frame["type"]), str(frame["room"]), str(frame["user"]))
        self.orders[key] = frame
        self.resend_orders(0.0)
        return key

    def resend_orders(self, older_than: float) -> None:
        """Send every unanswered order last sent more than `older_than` seconds ago."""
        if not self._online or self._sock is None:
            return
        now = time.monotonic()
        for key, frame in list(self.orders.items()):
            if now - self.order_last_sent.get(key, float("-inf")) >= older_than:
                self.order_tries[key] += 1
                self.order_last_sent[key] = now
                self._write(self._sock, frame)

    def hold_off(self) -> None:
        """Go offline on purpose (no socket, no reconnect) until `resume`."""
        self._resume.clear()
        self._held_at = time.monotonic()
        if self._sock is not None:
            self._sock.close()

    def resume(self) -> None:
        if self._held_at is not None:
            self.held_seconds += time.monotonic() - self._held_at
            self._held_at = None
        self._resume.set()

    @property
    def offline(self) -> bool:
        return self._sock is None

    def stop(self) -> None:
        """End the run: no more reconnects; close the socket."""
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()

    @property
    def unacked(self) -> int:
        return len(self.outbox)

    @property
    def in_outage(self) -> bool:
        return self._closed_at is not None

    def has_seen(self, room: str, key: StreamKey) -> bool:
        return self.logs[room].last_key >= key

    # -- the loop ------------------------------------------------------------

    async def run(self) -> None:
        try:
            if not await self._login():
                return
            delay = 0.0
            for _ in range(MAX_CONNECT_TRIES):
                if self._stopping.is_set() or time.monotonic() > self.deadline:
                    return
                if delay > 0 and await self._sleep(delay):
                    return
                if not self._resume.is_set() and await self._held():
                    return
                delay = await self._connect_once()
        finally:
            self._cancel_retry()
            self.http.close()

    async def _held(self) -> bool:
        """Wait while held off (the drill's script); True if stopping."""
        remaining = max(0.0, self.deadline - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._resume.wait(), remaining)
        return self._stopping.is_set() or not self._resume.is_set()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early on stop; True if stopping."""
        seconds = min(seconds, max(0.0, self.deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    def _backoff(self) -> float:
        """the browser client: random between 0 and min(cap, first * 2^attempt)."""
        ceiling = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2**self._attempt)
        self._attempt += 1
        return random.uniform(0, ceiling)

    async def _login(self) -> bool:
        for _ in range(MAX_LOGIN_TRIES):
            if self._stopping.is_set() or time.monotonic() > self.deadline:
                return False
            try:
                self.http.cookies.pop("_xsrf", None)
                response = await self.http.login(self.user)
                if response.code == 302:
                    return True
                self.errors[f"login {response.code}"] += 1
            except Exception as error:  # noqa: BLE001 - any failure is retried, and counted
                self.errors[f"login {type(error).__name__}"] += 1
            if await self._sleep(LOGIN_RETRY_SECONDS):
                return False
        return False

    async def _connect_once(self) -> float:
        """One try: probe, open, serve until closed. Returns the wait before the next try."""
        try:
            probe = await self.http.request("GET", "/session", timeout=HTTP_TIMEOUT_SECONDS)
        except Exception as error:  # noqa: BLE001 - fetch failed: the browser client backs off
            self.errors[f"session {type(error).__name__}"] += 1
            self.connect_failures += 1
            return self._backoff()
        if probe.code == 401:
            self.errors["session 401"] += 1
            if not self._probed_401:
                self._probed_401 = True
                return REPROBE_AFTER_401_SECONDS
            # the browser client sends the user to the login page; the drill's user logs in again.
            self._probed_401 = False
            self.relogins += 1
            return 0.0 if await self._login() else self._backoff()
        self._probed_401 = False
        if probe.code != 200:
            self.errors[f"session {probe.code}"] += 1
            self.connect_failures += 1
            return self._backoff()
        lobby_last = self.logs[LOBBY].last
        path = "/ws" + (f"?after={lobby_last}" if lobby_last else "")
        try:
            sock = await ChatSocket.connect(self.http, path, timeout=HTTP_TIMEOUT_SECONDS)
        except Exception as error:  # noqa: BLE001 - a failed handshake closes like any socket
            self.errors[f"ws {getattr(error, 'code', type(error).__name__)}"] += 1
            self.connect_failures += 1
            return self._backoff()
        if not self._resume.is_set():  # held off while it connected
            sock.close()
            return 0.0
        code = await self._serve(sock)
        if self._stopping.is_set() or not self._resume.is_set():
            return 0.0
        self.errors[f"close {code if code is not None else 'abnormal'}"] += 1
        if self._closed_at is None:  # an outage starts; a failed retry does not start another
            self._closed_at = time.monotonic()
            self.reconnects += 1
        if code == CLOSE_SESSION_ENDED:
            self.relogins += 1
            return 0.0 if await self._login() else self._backoff()
        if code == CLOSE_DRAINING:
            return random.uniform(0, DRAIN_JITTER_SECONDS)
        return self._backoff()

    async def _serve(self, sock: ChatSocket) -> int | None:
        """Read frames until the socket closes; return its close code."""
        self._sock = sock
        self._joined = set()
        watchdog = asyncio.get_running_loop().call_later(
            HELLO_TIMEOUT_SECONDS, lambda: None if self._online else sock.close()
        )
        try:
            while True:
                raw = await sock.conn.read_message()
                if raw is None:
                    return sock.conn.close_code
                if isinstance(raw, str):
                    self._on_frame(sock, json.loads(raw))
        finally:
            watchdog.cancel()
            self._cancel_retry()
            self._online = False
            self._sock = None
            if self.sockets and self.sockets[-1].closed_at is None:
                self.sockets[-1].closed_at = time.monotonic()

    # -- frames --------------------------------------------------------------

    def _watched(self, kind: str, frame: dict[str, Any], count: int = 1) -> None:
        room = frame.get("room")
        if isinstance(room, str) and room in self.watch:
            self.events.append(RoomEvent(kind, room, self._frames, time.monotonic(),
                                         len(self.sockets), count))

    def _on_frame(self, sock: ChatSocket, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        self._frames += 1
        if kind in ("chat", "presence", "kicked"):
            self._watched(str(kind), frame)
        elif kind == "history":
            messages = frame.get("messages")
            self._watched("history", frame, len(messages) if isinstance(messages, list) else 0)
        if kind == "chat":
            room = frame.get("room")
            if isinstance(room, str) and room in self.logs:
                self.logs[room].record(str(frame["id"]))
        elif kind == "kicked":
            room = frame.get("room")
            if isinstance(room, str):
                self.remove(room)
        elif kind == "moderated":
            key = (str(frame.get("action")), str(frame.get("room")), str(frame.get("user")))
            if self.orders.pop(key, None) is not None:
                self.answered[key] = time.monotonic()
        elif kind == "ack":
            cid = str(frame.get("cid"))
            msg_id = str(frame.get("id"))
            if cid not in self.created:  # a probe got in
                self.probes_acked += 1
                return
            earlier = self.acks.get(cid)
            if earlier is not None and earlier != msg_id:
                self.ack_conflicts += 1
            self.acks[cid] = msg_id
            self.outbox.pop(cid, None)
        elif kind == "presence":
            room = frame.get("room")
            if isinstance(room, str) and room in self.rooms:
                self._joined.add(room)
            if all(r in self._joined for r in self.rooms):
                self.ready.set()
            if room == self.room:
                if self._closed_at is not None:
                    self.reconnect_seconds.append(time.monotonic() - self._closed_at)
                    self._closed_at = None
        elif kind == "hello":
            self._online = True
            self._attempt = 0
            self.instances.append(str(frame.get("instance")))
            rooms = frame.get("rooms")
            self.sockets.append(SocketLog(len(self.sockets) + 1, time.monotonic(),
                                          [str(r) for r in rooms] if isinstance(rooms, list)
                                          else []))
            # The lobby was resumed by the URL's ?after=; resume the others.
            for room in self.rooms:
                if room != LOBBY:
                    self._send_join(sock, room)
            for cid in list(self.outbox):
                self._send_chat(cid)
            self.resend_orders(0.0)
            self.probe()
        elif kind == "error":
            code = str(frame.get("code"))
            self.errors[code] += 1
            if code in RETRYABLE_ERRORS and self._retry is None:
                self._retry = asyncio.get_running_loop().create_task(self._retry_later(sock))

    async def _retry_later(self, sock: ChatSocket) -> None:
        """Nothing was stored: after a pause re-join what is not joined and resend the outbox."""
        try:
            await asyncio.sleep(RETRY_AFTER_ERROR_SECONDS)
        finally:
            self._retry = None
        if self._sock is not sock or not self._online:
            return
        # A room already joined is left alone: re-joining it would replay from
        # our last id, and frames still in flight would then come twice.
        for room in self.rooms:
            if room not in self._joined:
                if room == LOBBY:
                    # the browser client re-joins only the other rooms here (the lobby came
                    # from the URL), so a browser would stay out of the lobby.
                    self.errors["lobby re-joined after error"] += 1
                self._send_join(sock, room)
        for cid in list(self.outbox):
            self._send_chat(cid)
        self.resend_orders(0.0)

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _send_join(self, sock: ChatSocket, room: str) -> None:
        frame: dict[str, Any] = {"type": "join", "room": room}
        last = self.logs[room].last
        if last is not None:
            frame["after"] = last
        self._write(sock, frame)

    def _send_chat(self, cid: str) -> None:
        if self._sock is None:
            return
        room, text = self.outbox[cid]
        self._write(self._sock, {"type": "chat", "room": room, "text": text, "cid": cid})

    def _write(self, sock: ChatSocket, frame: dict[str, Any]) -> None:
        try:
            future = sock.conn.write_message(json.dumps(frame))
        except WebSocketClosedError:
            return  # the reader sees the close and reconnects; the outbox keeps the send
        future.add_done_callback(_swallow)


def _swallow(future: asyncio.Future[None]) -> None:
    """A write that failed because the socket closed: the outbox still has it."""
    if not future.cancelled():
        future.exception()
