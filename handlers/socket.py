"""The chat WebSocket: one per browser tab, speaking docs/protocol.md's frames."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import tornado.web
import tornado.websocket
from redis.exceptions import OutOfMemoryError, RedisError
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError
from tornado.websocket import WebSocketProtocol

import metrics
from handlers.base import REDIS_FULL, set_security_headers
from handlers.frames import (
    FRAME_TYPES,
    Audit,
    Change,
    Chat,
    ClientFrame,
    Create,
    DirectMessage,
    FrameError,
    History,
    Join,
    Leave,
    Moderate,
    Typing,
    epoch_of,
    message_id,
    parse_frame,
)
from handlers.limits import SocketLimits, take_token
from handlers.outcomes import ERRORS_SENT, NO_CLOSE_FRAME, count_close
from internals.frame_loop import with_direct_frames
from internals.handshake import forget_handshake
from internals.wire import WireFrames, write_now
from pubsub import ChatBus, Refused, frame
from pubsub.changes import FORBIDDEN as CHANGE_FORBIDDEN
from pubsub.changes import MUTED as CHANGE_MUTED
from pubsub.changes import NO_SUCH_MESSAGE as CHANGE_NO_SUCH_MESSAGE
from pubsub.changes import RATE_LIMITED as CHANGE_RATE_LIMITED
from pubsub.codec import ack_frame
from pubsub.publish import NotReplicated
from runtime.keepalive import HEARTBEAT_FRAME, PING_FRAME, PINGS_UNANSWERED_BEFORE_CLOSE
from sessions import SessionMixin

if TYPE_CHECKING:  # the process owns the handlers' app; imported for types only
    from runtime.process import ChatProcess

log = logging.getLogger(__name__)

LOBBY = "lobby"

# Close codes (docs/protocol.md).
CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = 1001
CLOSE_DRAINING = 1012
CLOSE_SESSION_ENDED = 4401

# A history reply holds at most this many characters of messages (at most 4
# bytes each: well under the slow-consumer bound); a longer page is cut and
# says `more`.
HISTORY_FRAME_MAX_CHARS = 64 * 1024
# History requests per socket: a scroll-back asks a page at a time, a script
# in a loop would make Redis read up to 100 long messages per frame.
HISTORY_BURST = 10.0
HISTORY_PER_SECOND = 2.0
# How long a chat refused for Redis holds back the socket's later chats
# (waiting for its resend); a client that gave it up is not blocked for good.
ORDER_HOLD_SECONDS = 10.0
# Frames held for a socket while its own chat is published (an ack is one
# Redis round trip away; a publish slower than this many frames lets them go).
HELD_MAX_FRAMES = 256
# A socket that takes none of a reply it is owed within this long is cut
# off as a slow consumer (it resumes from history when it comes back).
DRAIN_TIMEOUT_SECONDS = 30.0
# A typing notice per user and room at most this often; more are dropped.
TYPING_MIN_INTERVAL_SECONDS = 3.0

FRAMES_IN = metrics.counter("chat_frames_in_total", "Frames received from clients")
FRAMES_REFUSED = metrics.counter("chat_frames_refused_total", "Client frames answered with error")
SLOW_CONSUMERS = metrics.counter(
    "chat_slow_consumers_total", "Sockets cut off because they stopped reading"
)
ABUSERS = metrics.counter("chat_abuse_closes_total", "Sockets closed with 1008 for abuse")
HELLO_ROOMS_LOST = metrics.counter(
    "chat_hello_rooms_unavailable_total", "hello frames sent without the login's rooms (Redis)"
)
FRAME_FAILURES = metrics.counter(
    "chat_frame_failures_total", "Client frames whose handling failed unexpectedly (a bug)"
)



class ChatSocketHandler(SessionMixin, tornado.websocket.WebSocketHandler):
    """GET /ws: a logged-in user's chat socket."""

    # Our per-socket state lives in slots, not the instance dict: with Tornado's
    # own attributes that dict stays within the 30 keys CPython shares between
    # instances of a class (a shared-key dict), instead of growing a private
    # table of its own: about 1.3 KB less per idle socket. Tornado's open_args
    # and open_kwargs take slots too: with them the dict had 31 keys.
    __slots__ = ("user", "login_id", "wire", "last_typing", "history_tokens", "history_at",
                 "frame_tokens", "frame_at",
                 "unsent_cid", "unsent_until", "active", "answered", "unanswered", "held",
                 "closed_with", "open_args", "open_kwargs")

    user: str
    login_id: str
    # The process's frame builder (one message framed once for all sockets).
    wire: WireFrames
    last_typing: dict[str, float]
    # The cid of a chat refused for Redis and not resent yet: later chats wait
    # for it (until `unsent_until`), so a room shows a socket's chats in order.
    unsent_cid: str
    unsent_until: float
    # While this socket's chat is being published: the frames for it that
    # arrived meanwhile, sent after its `ack`, so the sender's own copy of the
    # message never comes before the ack (None when nothing is in flight).
    held: list[bytes] | None
    # A token bucket of history requests (each may read ~1.6 MB from Redis).
    history_tokens: float
    history_at: float
    # A token bucket of all frames from the peer (SocketLimits.frames_per_second).
    frame_tokens: float
    frame_at: float
    # Whether the user sent anything since the last session check: a user
    # chatting in one tab for days is not idle.
    active: bool
    # Keep-alive: whether the peer answered (or sent anything) since the last
    # ping, and how many pings in a row went unanswered.
    answered: bool
    unanswered: int
    # The close code this server closed the socket with, if it closed first (metrics).
    closed_with: int

    def initialize(self) -> None:
        # Set with the handler: on_close reads it even for a socket closed
        # before open() ran (or while it awaited).
        self.closed_with = 0

    def set_default_headers(self) -> None:
        set_security_headers(self)

    async def prepare(self) -> None:
        # Refuse before the upgrade: a foreign page first (no Redis read spent),
        # then a missing session.
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            raise tornado.web.HTTPError(403)
        if self.process.draining.is_set():
            raise tornado.web.HTTPError(503)  # would only be closed again: go elsewhere
        try:
            await self.load_session()
        except (RedisError, OSError):
            raise tornado.web.HTTPError(503) from None
        user = self.session_user
        if user is None:
            raise tornado.web.HTTPError(401)
        self.user = user
        login_id = self.session.get("login")
        self.login_id = login_id if isinstance(login_id, str) else ""

    def check_origin(self, origin: str) -> bool:
        """Same site (Origin's host:port is the Host we were asked for) or listed exactly."""
        allowed = self.process.config.allowed_origins
        if origin in allowed:
            return True
        host = self.request.headers.get("Host", "").lower()
        return bool(host) and urllib.parse.urlsplit(origin).netloc.lower() == host

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        # Messages handled by the frame loop itself, no task each (internals/frame_loop.py).
        return with_direct_frames(super().get_websocket_protocol())

    def get_compression_options(self) -> dict[str, Any] | None:
        # Off: per-message deflate costs CPU per socket and chat lines are short.
        return None

    @property
    def process(self) -> ChatProcess:
        process: ChatProcess = self.settings["process"]
        return process

    @property
    def bus(self) -> ChatBus:
        return self.process.bus

    @property
    def limits(self) -> SocketLimits:
        return self.process.config.limits

    async def open(self, *args: str, **kwargs: str) -> None:
        self.active = False
        self.wire = self.process.wire
        # Before anything that may close the socket: its frames are counted even then.
        self.frame_tokens, self.frame_at = float(self.limits.frames_burst), time.monotonic()
        if not self.process.sockets.admit(self):
            self.close(CLOSE_POLICY, "too many connections for this login")
            return
        self.last_typing = {}
        self.history_tokens, self.history_at = HISTORY_BURST, time.monotonic()
        self.unsent_cid, self.unsent_until = "", 0.0
        self.held = None
        self.answered = True  # the last keep-alive ping (none yet)
        self.unanswered = 0
        self.process.keepalive.add(self)
        stream = self._stream()
        if stream is not None:
            stream.max_write_buffer_size = self.limits.slow_consumer_bytes
        # Asked after registering: a logout that ended this login while the
        # upgrade ran was broadcast before we could hear it, so look for ourselves.
        try:
            alive, rooms = await self.session_store.login_state(self.login_id)
        except (RedisError, OSError) as error:
            # The client gets no rooms to rejoin and must be told nothing is
            # wrong with it: say so here, count it.
            HELLO_ROOMS_LOST.inc()
            log.warning("hello without the login's rooms: Redis %s", type(error).__name__)
            alive, rooms = True, []
        if not alive:
            self.end_session()
            return
        try:
            belongs = await self.process.rooms.rooms_of_user(self.user)
        except (RedisError, OSError):
            HELLO_ROOMS_LOST.inc()
            belongs = []
        # `rooms`: the rooms this login had joined besides the lobby, and the
        # private rooms and DMs the user belongs to, for the client to join.
        self.send_frame(frame("hello", user=self.user, instance=self.process.instance,
                              rooms=sorted(set(rooms + belongs) - {LOBBY})))
        # `/ws?after=ID&epoch=E` resumes the lobby from ID, like a join frame's
        # `after` and `epoch`, so a reconnecting client gets the lobby gap-free
        # without a second join.
        query: dict[str, object] = {"after": self.get_query_argument("after", None) or None,
                 "epoch": self.get_query_argument("epoch", None) or None}
        try:
            after, epoch = message_id(query, "after"), epoch_of(query)
        except FrameError as error:
            self._refuse(error.code, error.reason)
            after, epoch = None, ""
        forget_handshake(self)
        try:
            since = self.bus.now()
            await self.bus.admission.may_enter(self.user, LOBBY, self.admin)
            await self.bus.join(self, LOBBY, after, since, self.admin, epoch)
        except Refused as refused:
            self._refuse(refused.code, refused.reason)
        except (RedisError, OSError, TimeoutError):
            self._refuse("unavailable", "could not join the lobby; try again")

    def keepalive_due(self, ping: bool) -> bool:
        """Keep-alive (runtime/keepalive.py): a heartbeat, or a ping, or the close
        of a peer that answered none of the last pings."""
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            return False
        if not ping:
            self._write_wire(HEARTBEAT_FRAME)
            return True
        if self.answered:
            self.unanswered = 0
        elif self.unanswered >= PINGS_UNANSWERED_BEFORE_CLOSE:
            self.close(CLOSE_GOING_AWAY, "ping timed out")
            return False
        self.unanswered += 1
        self.answered = False
        self._write_wire(PING_FRAME)
        return True

    def on_pong(self, data: bytes) -> None:
        self.answered = True

    async def on_message(self, message: str | bytes) -> None:
        FRAMES_IN.inc()
        if not self._within_frame_budget():
            return
        self.active = True
        self.answered = True  # anything from the peer shows it is alive
        parsed: ClientFrame | None = None
        try:
            parsed = parse_frame(message, self.limits.max_text_chars)
            if isinstance(parsed, Chat):
                await self._chat(parsed)
            elif isinstance(parsed, Join):
                await self._join(parsed)
            elif isinstance(parsed, Leave):
                if self.bus.is_member(self, parsed.room):
                    await self.bus.admit_leave(self.user)
                # Forget the room for this login first, so a refresh racing
                # the leave never brings it back.
                if self.login_id:
                    await self.session_store.remove_room(self.login_id, parsed.room)
                await self.bus.leave(self, parsed.room)
            elif isinstance(parsed, History):
                await self._history(parsed)
            elif isinstance(parsed, Typing):
                await self._typing(parsed)
            elif isinstance(parsed, Change):
                await self._change(parsed)
            else:
                await self._room_frame(parsed)
        except Refused as error:  # FrameError too: refused, the socket stays
            self._refuse(error.code, error.reason, parsed)
        except NotReplicated:
            # Stored and published, but fewer replicas than asked hold it yet:
            # a failover now could lose it. A resend with the same cid is not
            # stored twice; it is acked once the replicas confirm.
            self._refuse("unconfirmed", "stored, but not yet on enough replicas; "
                                        "resend with the same cid", parsed)
        except (RedisError, OSError, TimeoutError) as error:
            if isinstance(error, OutOfMemoryError):
                REDIS_FULL.inc()
            self._refuse("unavailable", "nothing was stored; resend later with the same cid",
                         parsed)
        except Exception as error:  # noqa: BLE001 - the boundary between a client and the process
            # No input may cost a traceback in the log (it could carry the
            # input) or the socket: name the failure, count it, answer.
            FRAME_FAILURES.inc()
            log.error("frame handling failed: %s", type(error).__name__)
            log.debug("frame handling failed", exc_info=True)
            self._refuse("bad_frame", "that frame could not be handled", parsed)

    def _within_frame_budget(self) -> bool:
        """Take a token for this frame; past the budget, close the socket (1008)."""
        rate = self.limits.frames_per_second
        if not rate:
            return True
        now = time.monotonic()
        allowed, self.frame_tokens = take_token(self.frame_tokens, now - self.frame_at, rate,
                                                self.limits.frames_burst)
        self.frame_at = now
        if allowed:
            return True
        conn = self.ws_connection
        if conn is not None and not conn.is_closing():  # frames already on their way: once
            ABUSERS.inc()
            self.close(CLOSE_POLICY, "too many frames")
        return False

    async def _join(self, join: Join) -> None:
        if not await self._session_alive():
            return
        rooms = self.bus.rooms_of(self)
        if join.room not in rooms and len(rooms) >= self.limits.max_rooms_per_socket:
            raise FrameError(
                "bad_room", f"at most {self.limits.max_rooms_per_socket} rooms per connection"
            )
        since = self.bus.now()  # before the room's rule is asked: a kick after it counts
        await self.bus.admit_join(self.user, join.room, self.admin)
        await self.bus.join(self, join.room, join.after, since, self.admin, join.epoch)
        if self.login_id and join.room != LOBBY:
            await self.session_store.add_room(self.login_id, join.room)

    @property
    def admin(self) -> bool:
        return self.process.rooms.is_admin(self.user)

    async def _room_frame(self, parsed: Create | Moderate | DirectMessage | Audit) -> None:
        """create, invite, role, kick, ban, unban, mute, dm, audit (rooms/moderation.py)."""
        rooms = self.process.rooms
        # Each spends a turn of the user's join bucket: a loop of invitations
        # or kicks is a flood of Redis writes and control messages.
        await self.bus.admit_leave(self.user)
        if isinstance(parsed, Create):
            await rooms.create(self.user, parsed.room, parsed.private)
            await self._join(Join(parsed.room, None))
        elif isinstance(parsed, DirectMessage):
            room = await rooms.dm(self.user, parsed.user)
            self.send_frame(frame("dm", user=parsed.user, room=room))
        elif isinstance(parsed, Audit):
            entries = await rooms.audit(self.user, parsed.room)
            self.send_frame(frame("audit", room=parsed.room, entries=entries))
        else:
            if parsed.kind == "invite":
                await rooms.invite(self.user, parsed.room, parsed.user)
            elif parsed.kind == "role":
                await rooms.set_role(self.user, parsed.room, parsed.user, parsed.role)
            elif parsed.kind in ("kick", "ban"):
                await rooms.kick(self.user, parsed.room, parsed.user, ban=parsed.kind == "ban")
            elif parsed.kind == "unban":
                await rooms.unban(self.user, parsed.room, parsed.user)
            elif parsed.kind == "mute":
                await rooms.mute(self.user, parsed.room, parsed.user, parsed.seconds)
            # (ext) The sender learns the action is stored and ordered everywhere.
            self.send_frame(frame("moderated", action=parsed.kind, room=parsed.room,
                                  user=parsed.user))

    async def _change(self, change: Change) -> None:
        """edit or delete (pubsub/changes.py); everyone in the room, the sender too,
        gets the `edited` or `deleted` frame."""
        if not self.bus.is_member(self, change.room):
            raise await self._not_joined(change.room, f"you {change.kind} in it")
        done = await self.bus.change(change.kind, change.room, self.user, change.id,
                                     change.text, self.admin)
        if done.status == CHANGE_NO_SUCH_MESSAGE:
            raise FrameError("bad_frame", "the room holds no message with that id")
        if done.status == CHANGE_FORBIDDEN:
            raise FrameError("forbidden", f"you may not {change.kind} that message")
        if done.status == CHANGE_MUTED:
            raise FrameError("muted", "you are muted in this room for now")
        if done.status == CHANGE_RATE_LIMITED:
            raise FrameError("rate_limited", "too many messages; slow down and resend")
        if change.kind == "delete" and done.author != self.user:
            await self.process.rooms.record(change.room, self.user, "delete", done.author,
                                            message=change.id)

    async def _not_joined(self, room: str, doing: str) -> FrameError:
        """The refusal for a frame about a room this socket has not joined:
        `forbidden` if the user may not read it at all, else `not_joined`."""
        await self.process.rooms.check_read(room, self.user)
        return FrameError("not_joined", f"join the room before {doing}")

    async def _history(self, request: History) -> None:
        if not self.bus.is_member(self, request.room):
            raise await self._not_joined(request.room, "reading its history")
        now = time.monotonic()
        allowed, self.history_tokens = take_token(self.history_tokens, now - self.history_at,
                                                  HISTORY_PER_SECOND, HISTORY_BURST)
        self.history_at = now
        if not allowed:
            raise FrameError("rate_limited", "too many history requests; wait a moment")
        # Joined is not enough: a ban on another instance a moment ago counts.
        await self.process.rooms.check_read(request.room, self.user)
        page, more = await self.bus.history_page(request.room, request.before, request.limit)
        # A page of long messages is kept under HISTORY_FRAME_MAX_CHARS: the
        # newest of it (the client pages on backwards from its oldest id).
        kept, size = 0, 0
        for entry in reversed(page):
            size += len(entry.frame) + 1
            if kept and size > HISTORY_FRAME_MAX_CHARS:
                more = True
                break
            kept += 1
        page = page[len(page) - kept:]
        # The reply is ours to send whole: wait until the socket has taken what
        # was queued before it, so only a reader that fails to drain is cut.
        if not await self.drain():
            return
        # The messages are ready-made chat frames: splice them, do not re-encode.
        head = frame("history", room=request.room, more=more)[:-1]
        self.send_frame(head + ',"messages":[' + ",".join(e.frame for e in page) + "]}")

    async def _typing(self, typing: Typing) -> None:
        if not self.bus.is_member(self, typing.room):
            raise FrameError("not_joined", "join the room first")
        now = time.monotonic()
        if now - self.last_typing.get(typing.room, 0.0) < TYPING_MIN_INTERVAL_SECONDS:
            return
        self.last_typing[typing.room] = now
        await self.bus.publish_typing(typing.room, self.user)

    async def _chat(self, chat: Chat) -> None:
        if not self.bus.is_member(self, chat.room):
            raise await self._not_joined(chat.room, "writing to it")
        now = time.monotonic()
        if self.unsent_cid and chat.cid != self.unsent_cid and now < self.unsent_until:
            # An earlier chat of this socket was refused and not resent yet: a
            # later one stored first would show out of the order typed (the
            # client resends its outbox oldest first).
            raise FrameError("unavailable", "an earlier message is not stored yet; resend it first")
        self.held = []
        try:
            await self._publish(chat, now)
        finally:
            held, self.held = self.held, None
            if held:
                # The ack and what waited for it (often the sender's own copy): one send.
                self._write_wire(b"".join(held))

    async def _publish(self, chat: Chat, now: float) -> None:
        """Store and publish `chat`; `ack` it, or raise the refusal."""
        try:
            published = await self.bus.publish(chat.room, self.user, chat.text, chat.cid,
                                               self.login_id, self.admin)
        except NotReplicated:
            raise  # stored: nothing to hold back
        except (RedisError, OSError, TimeoutError):
            if chat.cid:
                self.unsent_cid, self.unsent_until = chat.cid, now + ORDER_HOLD_SECONDS
            raise
        if chat.cid == self.unsent_cid:
            self.unsent_cid = ""
        if published.forbidden:
            raise FrameError("forbidden", "you may not write to this room")
        if published.muted:
            raise FrameError("muted", "you are muted in this room for now")
        if published.rate_limited:
            if published.strikes >= self.limits.abuse_strikes:
                ABUSERS.inc()
                self.close(CLOSE_POLICY, "too many messages")
            raise FrameError("rate_limited", "too many messages; slow down and resend")
        if chat.cid:
            ack = self.wire.frame(ack_frame(chat.cid, published.id))
            if self.held is not None:
                self.held.insert(0, ack)
            else:
                self._write_wire(ack)

    async def _session_alive(self) -> bool:
        """Check the login behind this socket still has a session; end the socket if not."""
        if self.login_id and not await self.session_store.login_alive(self.login_id):
            self.end_session()
            return False
        return True

    def _refuse(self, code: str, reason: str, about: ClientFrame | None = None) -> None:
        """An `error` frame; (ext) with the refused frame's `type`, `room` and `cid`
        when it could be read, so a client knows which of its frames it answers."""
        FRAMES_REFUSED.inc()
        ERRORS_SENT.labels(code).inc()
        context: dict[str, str] = {}
        if about is not None:
            context["of"] = FRAME_TYPES.get(type(about), "")
            room = getattr(about, "room", None)
            if isinstance(room, str):
                context["room"] = room
            cid = getattr(about, "cid", "")
            if cid:
                context["cid"] = cid
            if isinstance(about, Moderate | Change):
                context["of"] = about.kind
        self.send_frame(frame("error", code=code, reason=reason, **context))

    def send_frame(self, text: str) -> None:
        """Queue a frame without waiting; a closed peer is simply skipped.

        Fan-out hands the same str to every local socket: it is framed once
        and written with one send per socket (internals/wire.py).
        """
        held = self.held
        if held is not None:
            if len(held) < HELD_MAX_FRAMES:
                held.append(self.wire.frame(text))
                return
            self.held = None  # a publish this slow: order gives way to memory
            for data in held:
                self._write_wire(data)
        self._write_wire(self.wire.frame(text))

    def _write_wire(self, data: bytes) -> None:
        stream = self._stream()
        if stream is None or self.ws_connection is None or self.ws_connection.is_closing():
            return
        try:
            write_now(stream, data)
        except StreamClosedError:
            pass
        except StreamBufferFullError:
            # A slow consumer: drop the connection (no close frame fits in a
            # full buffer). The client resumes from history when it returns.
            SLOW_CONSUMERS.inc()
            self.closed_with = NO_CLOSE_FRAME
            stream.close()

    def busy(self) -> bool:
        stream = self._stream()
        return stream is None or stream.writing()

    async def drain(self) -> bool:
        """Wait until everything queued is sent (fanout.Member); a socket that
        takes none of it within DRAIN_TIMEOUT_SECONDS is cut as a slow consumer."""
        stream = self._stream()
        if stream is None or stream.closed():
            return False
        if not stream.writing():
            return True
        try:
            # Resolves once every byte queued so far has gone to the kernel.
            await asyncio.wait_for(stream.write(b""), DRAIN_TIMEOUT_SECONDS)
        except StreamClosedError:
            return False
        except TimeoutError:
            SLOW_CONSUMERS.inc()
            self.closed_with = NO_CLOSE_FRAME
            stream.close()
            return False
        return not stream.closed()

    def _stream(self) -> IOStream | None:
        """The upgraded connection's stream, None before the upgrade or after close."""
        return self.ws_connection.stream if self.ws_connection is not None else None

    def end_session(self) -> None:
        self.close(CLOSE_SESSION_ENDED, "session ended")

    def close_draining(self) -> None:
        self.close(CLOSE_DRAINING, "instance draining")

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        conn = self.ws_connection
        if code and conn is not None and not conn.is_closing():
            self.closed_with = code
        super().close(code, reason)

    def on_close(self) -> None:
        count_close(self.closed_with, self.close_code)
        # Symmetric with open: unregister, and leave its rooms in the background.
        self.process.sockets.remove(self, lambda: self.bus.detach(self))
