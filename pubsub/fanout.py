"""Local fan-out: which sockets of this process are in which room, and what each has seen.

Each member keeps, per room, the id of the last message it was given (its
cursor). Ids increase within a room, so a message at or before the cursor is
a repeat and is dropped: that makes history replay plus live delivery, and a
subscriber's gap repair, gap-free and repeat-free.

A message is decoded once and its JSON frame built once per process, then
written to every member without awaiting any of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import metrics
from pubsub.codec import ZERO_ID, StreamId, chat_frame, frame, parse_id

log = logging.getLogger(__name__)

DELIVERED = metrics.counter("chat_frames_out_total", "Frames written to local sockets")


class Member(Protocol):
    """Anything that can take a frame: a WebSocket handler, a test double, a bench probe."""

    user: str

    def send_frame(self, frame: str) -> None:
        """Queue one text frame; never blocks, never raises for a closed peer."""

    def busy(self) -> bool:
        """True while earlier frames are still unsent: skip what can be dropped."""

    async def drain(self) -> bool:
        """Wait until every queued frame is sent. False if the member is gone,
        or took none of it in time (it is then closed as a slow consumer)."""


# Characters of live messages held for one member while its replay runs
# (they go out in one go when it ends). Past this they are dropped and the
# replay reads them from the stream instead (every chat is stored), so a
# long replay holds neither a room's traffic in memory nor a burst that
# would overrun the socket.
PENDING_MAX_CHARS = 64 * 1024


@dataclass
class Cursor:
    last: StreamId = ZERO_ID
    # While the member's history replay runs, live messages wait here.
    pending: list[tuple[StreamId, str]] | None = field(default_factory=list)
    pending_chars: int = 0
    # Live messages were dropped from `pending`: the replay must read on.
    overflowed: bool = False

    def hold_live(self) -> None:
        """Hold live messages (again) while a replay runs, from an empty buffer."""
        self.pending, self.pending_chars, self.overflowed = [], 0, False


class Fanout:
    """Local room membership and delivery."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict[Member, Cursor]] = {}
        # The reverse index: a closing socket leaves its rooms without a scan of all.
        self._rooms_of: dict[Member, set[str]] = {}

    def add(self, member: Member, room: str) -> Cursor:
        """Start buffering live messages of `room` for `member`; its cursor."""
        members = self.rooms.setdefault(room, {})
        cursor = members.get(member)
        if cursor is None:
            cursor = members[member] = Cursor()
            self._rooms_of.setdefault(member, set()).add(room)
        else:
            cursor.hold_live()
        return cursor

    def remove(self, member: Member, room: str) -> bool:
        """Forget `member` in `room`; True when it was the room's last local member."""
        members = self.rooms.get(room)
        if members is None or members.pop(member, None) is None:
            return False
        rooms = self._rooms_of.get(member)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms_of[member]
        if members:
            return False
        del self.rooms[room]
        return True

    def is_member(self, member: Member, room: str) -> bool:
        return member in self.rooms.get(room, ())

    def rooms_of(self, member: Member) -> list[str]:
        return sorted(self._rooms_of.get(member, ()))

    def finish_replay(self, member: Member, cursor: Cursor) -> None:
        """Replay is done: send what arrived live meanwhile and go live."""
        pending, cursor.pending, cursor.pending_chars = cursor.pending or [], None, 0
        # A gap repair may have queued older ids after newer live ones.
        pending.sort(key=lambda item: item[0])
        for key, text in pending:
            if key > cursor.last:
                cursor.last = key
                member.send_frame(text)

    def deliver(self, room: str, payload: dict[str, object]) -> None:
        """Fan one decoded payload out to every local member of `room`."""
        members = self.rooms.get(room)
        if not members:
            return
        kind = payload.get("t")
        if kind == "chat":
            msg_id = str(payload["id"])
            key = parse_id(msg_id)
            text = chat_frame(msg_id, room, str(payload["user"]), str(payload["text"]))
            self.deliver_chat(members, key, text)
        elif kind in ("edit", "delete"):
            # Events in the room's order, keyed by their own stream ids like chats.
            key = parse_id(str(payload["id"]))
            target = str(payload["target"])
            notice = (frame("edited", room=room, id=target, text=str(payload["text"]))
                      if kind == "edit" else frame("deleted", room=room, id=target))
            self.deliver_chat(members, key, notice)
        elif kind == "typing":
            # Never stored, and the first thing dropped: only members that are
            # keeping up get it, and never the typist.
            user = str(payload["user"])
            notice = frame("typing", room=room, user=user)
            for member in list(members):
                if member.user != user and not member.busy():
                    member.send_frame(notice)
        elif kind in ("joined", "left"):
            notice = frame(str(kind), room=room, user=str(payload["user"]))
            for member in list(members):
                member.send_frame(notice)
            DELIVERED.inc(len(members))
        else:
            log.warning("unknown payload kind %r in room channel", kind)

    def deliver_chat(self, members: dict[Member, Cursor], key: StreamId, text: str) -> None:
        sent = 0
        for member, cursor in list(members.items()):
            if cursor.pending is not None:
                if cursor.pending_chars + len(text) <= PENDING_MAX_CHARS:
                    cursor.pending.append((key, text))
                    cursor.pending_chars += len(text)
                else:
                    cursor.overflowed = True
            elif key > cursor.last:
                cursor.last = key
                member.send_frame(text)
                sent += 1
        DELIVERED.inc(sent)

    def oldest_cursor(self, room: str) -> StreamId | None:
        """Where a repair of `room` must start so every live member is covered."""
        cursors = [c.last for c in self.rooms.get(room, {}).values() if c.pending is None]
        return min(cursors) if cursors else None
