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

Edits and deletes (bench/lifecycle.py): a client asked to `change` edits or
deletes one of its own acknowledged messages, one change at a time. The
change is sent once the room is joined on the current socket (after the
join's replay, which brings the answer of a try whose answer the last socket
lost), and again after `unavailable`, `not_joined` or `rate_limited`; the
answer is its own `edited` (with its text) or `deleted` frame coming back.
Every client keeps what it was shown of each followed room (`views`: chat
frames add, `edited` frames change, `deleted` frames remove, a `reset`
empties it, as the browser does), every chat, `edited`, `deleted` and `reset`
frame with its socket and time (`seen`), and when it sent each join, so the
drill can compare the view with Redis and tell which frames came after a
delete was acknowledged. It keeps each room's `epoch` from presence and sends
it back with `after` (`/ws?after=…&epoch=…` for the lobby).
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

EDIT, DELETE = "edit", "delete"


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
    # Where in `ids` each `reset` came: the room started over for the client
    # there (the recent messages follow), so repeats and order count within
    # the stretches between resets.
    resets: list[int] = field(default_factory=list)

    def record(self, msg_id: str) -> None:
        self.ids.append(msg_id)
        key = stream_key(msg_id)
        if key > self.last_key:
            self.last_key = key
            self.last = msg_id

    def reset(self) -> None:
        """docs/protocol.md: on `reset` a client drops its last id for the room."""
        self.resets.append(len(self.ids))
        self.last, self.last_key = None, (0, 0)

    def stretches(self) -> list[list[str]]:
        """`ids` cut at every reset."""
        cuts = [0, *self.resets, len(self.ids)]
        return [self.ids[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]


@dataclass(slots=True)
class Seen:
    """A chat, `edited`, `deleted` or `reset` frame of a followed room, as it came;
    `epoch` for a presence frame of one (its epoch)."""

    kind: str
    room: str
    id: str  # the message it is about ("" for reset and epoch)
    text: str  # its text (chat, edited); the reason (reset); the epoch (epoch)
    seq: int  # the client's frame counter: the order frames arrived in
    sock: int  # the socket it came on (SocketLog.no)
    at: float  # monotonic time it was read


@dataclass(slots=True)
class JoinSent:
    """A join of `room` written on socket `sock` (the lobby: the socket's own
    opening, `/ws?after=`), after frame number `seq` and at monotonic `at`."""

    room: str
    sock: int
    seq: int
    at: float


@dataclass
class ChangeOrder:
    """One edit or delete the client was asked for, and what became of it."""

    kind: str  # EDIT or DELETE
    room: str
    id: str  # the message (its own)
    cid: str  # the message's cid
    text: str  # the new text (an edit)
    asked_at: float  # monotonic
    tries: int = 0  # frames sent for it
    acked_at: float | None = None  # its own edited/deleted frame came back (monotonic)
    refused: str = ""  # the error code that ended it without an answer
    # A delete answered `bad_frame` after an earlier try: the message was gone
    # by then (the earlier try's answer was lost). Monotonic.
    gone_at: float | None = None
    given_up: bool = False  # the client left the room (removed) before an answer


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
    connect_at: float | None = None  # when its handshake began (its lobby join)


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
        self.ack_at: dict[str, float] = {}  # cid -> when (monotonic) its first ack came
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
        # Edits and deletes (bench/lifecycle.py).
        self.changes: list[ChangeOrder] = []  # every change asked, in order
        self.views: dict[str, dict[str, str]] = {name: {} for name in self.rooms}
        self.seen: list[Seen] = []
        self.joins_sent: list[JoinSent] = []
        self.epochs: dict[str, str] = {}  # room -> epoch from its last presence
        self.edits_of_unknown = 0  # `edited` frames for a message it did not have
        self.forgotten: set[str] = set()  # its messages in a room that was reset since
        self._change: ChangeOrder | None = None  # the one waiting for its answer
        # The change a retryable error answered: resent by the retry (only
        # then, so a try still in flight is not sent twice).
        self._change_retry: ChangeOrder | None = None
        self._connect_at: float | None = None
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

    def say(self, room: str | None = None) -> None:
        """Type one message in `room` (default: its next room): into the outbox, and
        out at once when online."""
        self._seq += 1
        cid = f"{self.user}.{self._seq}"
        text = f"{cid} drill"
        if room is None:
            room = self.writes[self._write_turn % len(self.writes)]
            self._write_turn += 1
        self.outbox[cid] = (room, text)
        self.created[cid] = room
        if self._online:
            self._send_chat(cid)

    def change(self, kind: str, rng: random.Random) -> ChangeOrder | None:
        """Edit or delete (`kind`) one of its own acknowledged messages in a room it
        follows, picked with `rng`; None when busy with another change or when it
        has nothing to change. Sent now if the room is joined, else once it is."""
        if self._change is not None:
            return None
        deleted = {c.id for c in self.changes if c.kind == DELETE}
        mine = [(cid, msg_id) for cid, msg_id in self.acks.items()
                if self.created[cid] in self.rooms and msg_id not in deleted
                and msg_id not in self.forgotten]
        if not mine:
            return None
        if kind == DELETE:
            # Half the deletes take an edited message: its edited text must go too.
            edited = {c.id for c in self.changes if c.kind == EDIT}
            some = [m for m in mine if m[1] in edited]
            if some and rng.random() < 0.5:
                mine = some
        cid, msg_id = rng.choice(mine)
        text = f"{cid} edit{len(self.changes) + 1}" if kind == EDIT else ""
        order = ChangeOrder(kind, self.created[cid], msg_id, cid, text, time.monotonic())
        self.changes.append(order)
        self._change = order
        self._send_change()
        return order

    @property
    def changing(self) -> bool:
        """A change is waiting for its answer."""
        return self._change is not None

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
        if self._change is not None and self._change.room == room:
            self._change.given_up = True
            self._change = None

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
        path = "/ws"
        if lobby_last:
            path += f"?after={lobby_last}"
            if self.epochs.get(LOBBY):
                path += f"&epoch={self.epochs[LOBBY]}"
        self._connect_at = time.monotonic()
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
            self._change_retry = None
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

    def _seen(self, kind: str, room: str, msg_id: str, text: str) -> None:
        self.seen.append(Seen(kind, room, msg_id, text, self._frames, len(self.sockets),
                              time.monotonic()))

    def _on_frame(self, sock: ChatSocket, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        self._frames += 1
        if kind in ("chat", "presence", "kicked"):
            self._watched(str(kind), frame)
        elif kind == "history":
            messages = frame.get("messages")
            self._watched("history", frame, len(messages) if isinstance(messages, list) else 0)
        room = frame.get("room")
        if kind in ("chat", "edited", "deleted", "reset") and isinstance(room, str) \
                and room in self.logs:
            self._on_room_frame(str(kind), room, frame)
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
            self.ack_at.setdefault(cid, time.monotonic())
            self.acks[cid] = msg_id
            self.outbox.pop(cid, None)
        elif kind == "presence":
            if isinstance(room, str) and room in self.rooms:
                self._joined.add(room)
                self.epochs[room] = str(frame.get("epoch") or "")
                self._seen("epoch", room, "", self.epochs[room])
                change = self._change
                if change is not None and change.room == room:
                    # After the join's replay: an answer the last socket lost
                    # came with it, so a change still waiting is sent (again).
                    self._send_change()
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
                                          else [], connect_at=self._connect_at))
            # The lobby was joined by the socket's opening.
            self.joins_sent.append(JoinSent(LOBBY, len(self.sockets), self._frames,
                                            self._connect_at or time.monotonic()))
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
            if frame.get("of") in (EDIT, DELETE) and self._change_refused(frame, code):
                return
            if code in RETRYABLE_ERRORS and self._retry is None:
                self._retry = asyncio.get_running_loop().create_task(self._retry_later(sock))

    def _on_room_frame(self, kind: str, room: str, frame: dict[str, Any]) -> None:
        """A chat, edited, deleted or reset frame of a followed room: the view, and
        the answer of a change."""
        view = self.views[room]
        msg_id = str(frame.get("id", ""))
        if kind == "chat":
            text = str(frame.get("text", ""))
            self.logs[room].record(msg_id)
            view[msg_id] = text
            self._seen(kind, room, msg_id, text)
        elif kind == "edited":
            text = str(frame.get("text", ""))
            if msg_id in view:
                view[msg_id] = text
            else:
                self.edits_of_unknown += 1  # docs/protocol.md: a client ignores it
            self._seen(kind, room, msg_id, text)
            change = self._change
            if change is not None and (change.kind, change.room, change.id, change.text) == \
                    (EDIT, room, msg_id, text):
                change.acked_at = time.monotonic()
                self._change = None
        elif kind == "deleted":
            view.pop(msg_id, None)
            self._seen(kind, room, msg_id, "")
            for change in self.changes:
                if (change.kind, change.room, change.id) == (DELETE, room, msg_id) \
                        and change.acked_at is None:
                    change.acked_at = time.monotonic()  # late, after a bad_frame: still its answer
                    if change is self._change:
                        self._change = None
        else:  # reset: earlier messages are no longer available; the recent ones follow
            reason = str(frame.get("reason", ""))
            self.logs[room].reset()
            view.clear()
            # As the browser does: the epoch named the history that is gone (the
            # next presence brings the new one), and its own messages there are
            # no longer its to change.
            self.epochs.pop(room, None)
            self.forgotten |= {mid for cid, mid in self.acks.items()
                               if self.created[cid] == room}
            self._seen(kind, room, "", reason)

    def _change_refused(self, frame: dict[str, Any], code: str) -> bool:
        """An error about an edit or delete. True when it settled the change
        waiting (no retry); retryable codes leave it waiting."""
        change = self._change
        if change is None or frame.get("of") != change.kind or frame.get("room") != change.room:
            return False
        if code in RETRYABLE_ERRORS:
            self._change_retry = change
            return False
        if change.kind == DELETE and code == "bad_frame" and change.tries > 1:
            # No such message: an earlier try deleted it and its answer was lost
            # (its `deleted` frame may still come). Redis decides at the end.
            change.gone_at = time.monotonic()
        change.refused = code
        self._change = None
        return True

    def _send_change(self) -> None:
        change = self._change
        if change is None or self._sock is None or change.room not in self._joined:
            return
        frame: dict[str, Any] = {"type": change.kind, "room": change.room, "id": change.id}
        if change.kind == EDIT:
            frame["text"] = change.text
        change.tries += 1
        self._change_retry = None
        self._write(self._sock, frame)

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
        if self._change is not None and self._change is self._change_retry:
            self._send_change()
        self._change_retry = None

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _send_join(self, sock: ChatSocket, room: str) -> None:
        frame: dict[str, Any] = {"type": "join", "room": room}
        last = self.logs[room].last
        if last is not None:
            frame["after"] = last
            if self.epochs.get(room):
                frame["epoch"] = self.epochs[room]
        self.joins_sent.append(JoinSent(room, len(self.sockets), self._frames, time.monotonic()))
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
