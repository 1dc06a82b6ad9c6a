"""Client frames: parse and check one WebSocket text frame (docs/protocol.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pubsub import Refused, StreamId, parse_id
from rooms.names import NAME_RULE, is_room_name, is_valid_name

# docs/protocol.md defaults.
MAX_TEXT_CHARS = 4000
MAX_CID_CHARS = 64
# A history page: what a scroll-up asks for by default, and the most it may.
HISTORY_PAGE = 50
HISTORY_PAGE_MAX = 100


class FrameError(Refused):
    """A refused frame: becomes an `error` frame, the socket stays open."""


@dataclass(frozen=True)
class Join:
    room: str
    after: StreamId | None
    # The room's epoch the client had with `after` ('' for none).
    epoch: str = ""


@dataclass(frozen=True)
class Change:
    """edit (with `text`) or delete of the message `id` in `room`."""

    kind: str
    room: str
    id: str
    text: str = ""


@dataclass(frozen=True)
class Leave:
    room: str


@dataclass(frozen=True)
class Chat:
    room: str
    text: str
    cid: str


@dataclass(frozen=True)
class History:
    room: str
    before: StreamId | None
    limit: int


@dataclass(frozen=True)
class Typing:
    room: str


@dataclass(frozen=True)
class Create:
    room: str
    private: bool


@dataclass(frozen=True)
class Moderate:
    """invite, role, kick, ban, unban, mute: an action of `kind` on `user` in `room`."""

    kind: str
    room: str
    user: str
    role: str = ""
    seconds: int = 0


@dataclass(frozen=True)
class DirectMessage:
    user: str


@dataclass(frozen=True)
class Audit:
    room: str


MODERATION = ("invite", "role", "kick", "ban", "unban", "mute")

ClientFrame = (Join | Leave | Chat | History | Typing | Create | Moderate | DirectMessage
               | Audit | Change)

# Each parsed frame's `type` (a Moderate's is its `kind`).
FRAME_TYPES: dict[type, str] = {Join: "join", Leave: "leave", Chat: "chat", History: "history",
                                Typing: "typing", Create: "create", DirectMessage: "dm",
                                Audit: "audit"}  # a Change's type is its `kind`

MAX_EPOCH_CHARS = 32


def _text(obj: dict[str, object], name: str) -> str:
    """Field `name` as text that UTF-8 can carry: JSON may spell a lone
    surrogate ("\\ud800") that no socket, log or Redis reply could encode."""
    value = obj.get(name)
    if not isinstance(value, str):
        raise FrameError("bad_frame", f"'{name}' must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FrameError("bad_frame", f"'{name}' is not valid Unicode text") from None
    return value


def _room(obj: dict[str, object], typed: bool = False) -> str:
    """The frame's room: a typed name, or (unless `typed`) a direct message's."""
    room = obj.get("room")
    if not isinstance(room, str):
        raise FrameError("bad_frame", "'room' must be a string")
    if not (is_valid_name(room) if typed else is_room_name(room)):
        raise FrameError("bad_room", f"a room name is {NAME_RULE}")
    return room


def _user(obj: dict[str, object]) -> str:
    user = obj.get("user")
    if not isinstance(user, str):
        raise FrameError("bad_frame", "'user' must be a string")
    if not is_valid_name(user):
        raise FrameError("unknown_user", "there is no such user")
    return user


def _moderate(kind: str, obj: dict[str, object]) -> Moderate:
    room, user = _room(obj), _user(obj)
    if kind == "role":
        role = obj.get("role")
        if role not in ("moderator", "member"):
            raise FrameError("bad_frame", "'role' must be 'moderator' or 'member'")
        return Moderate(kind, room, user, role=str(role))
    if kind == "mute":
        seconds = obj.get("seconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise FrameError("bad_frame", "'seconds' must be a whole number")
        return Moderate(kind, room, user, seconds=seconds)
    return Moderate(kind, room, user)


def epoch_of(obj: dict[str, object]) -> str:
    """A join's `epoch`: '' when absent."""
    epoch = obj.get("epoch")
    if epoch is None or epoch == "":
        return ""
    if not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_CHARS or not epoch.isalnum():
        raise FrameError("bad_frame", "'epoch' must be the room's epoch as the server gave it")
    return epoch


def _change(kind: str, obj: dict[str, object], max_text: int) -> Change:
    room = _room(obj)
    target = message_id(obj, "id")
    if target is None:
        raise FrameError("bad_frame", "'id' must be the message's id")
    if kind == "delete":
        return Change(kind, room, f"{target[0]}-{target[1]}")
    text = _text(obj, "text")
    if not text.strip():
        raise FrameError("bad_frame", "'text' is empty (delete the message instead)")
    if len(text) > max_text:
        raise FrameError("too_large", f"a message is at most {max_text} characters")
    return Change(kind, room, f"{target[0]}-{target[1]}", text)


def _create(obj: dict[str, object]) -> Create:
    private = obj.get("private", False)
    if not isinstance(private, bool):
        raise FrameError("bad_frame", "'private' must be true or false")
    return Create(room=_room(obj, typed=True), private=private)


def message_id(obj: dict[str, object], name: str) -> StreamId | None:
    """The message id in field `name` of a frame (or query), None if absent."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FrameError("bad_frame", f"'{name}' must be a message id string")
    try:
        return parse_id(value)
    except ValueError:
        raise FrameError("bad_frame", f"'{name}' is not a message id") from None


def _history(obj: dict[str, object]) -> History:
    limit = obj.get("limit", HISTORY_PAGE)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise FrameError("bad_frame", "'limit' must be a positive whole number")
    return History(room=_room(obj), before=message_id(obj, "before"),
                   limit=min(limit, HISTORY_PAGE_MAX))


def _chat(obj: dict[str, object], max_text: int) -> Chat:
    room = _room(obj)
    text = _text(obj, "text")
    if not text.strip():
        raise FrameError("bad_frame", "'text' is empty")
    if len(text) > max_text:
        raise FrameError("too_large", f"a message is at most {max_text} characters")
    cid = _text(obj, "cid") if obj.get("cid") is not None else ""
    if len(cid) > MAX_CID_CHARS or not cid.isprintable():
        raise FrameError("bad_frame", f"'cid' must be printable text of up to {MAX_CID_CHARS}")
    return Chat(room=room, text=text, cid=cid)


def parse_frame(raw: str | bytes, max_text: int = MAX_TEXT_CHARS) -> ClientFrame:
    """The frame `raw` as a typed value, or FrameError saying what is wrong."""
    if isinstance(raw, bytes):
        raise FrameError("bad_frame", "frames are JSON text, not binary")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        raise FrameError("bad_frame", "not valid JSON") from None
    if not isinstance(obj, dict):
        raise FrameError("bad_frame", "a frame is a JSON object")
    kind = obj.get("type")
    if kind == "chat":
        return _chat(obj, max_text)
    if kind == "join":
        return Join(room=_room(obj), after=message_id(obj, "after"), epoch=epoch_of(obj))
    if kind in ("edit", "delete"):
        return _change(str(kind), obj, max_text)
    if kind == "leave":
        return Leave(room=_room(obj))
    if kind == "history":
        return _history(obj)
    if kind == "typing":
        return Typing(room=_room(obj))
    if kind in MODERATION:
        return _moderate(str(kind), obj)
    if kind == "create":
        return _create(obj)
    if kind == "dm":
        return DirectMessage(user=_user(obj))
    if kind == "audit":
        return Audit(room=_room(obj))
    raise FrameError("bad_frame", "unknown frame type")
