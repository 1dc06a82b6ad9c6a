"""Reading a room's past from its stream: recent messages, and what came after an id.

A stream holds two kinds of entries: messages (`user`, `text`, `n`) and, in
the same order, events about earlier messages (`ev` edit or delete, `target`,
`by`, `n`; never a text). An edited message is read with its latest text
(kept in the room's `edits` hash) and `edited: true`; a deleted one is no
longer in the stream at all (XDEL). Replays after an id hand out the events
too, as `edited` / `deleted` frames, so a returning client updates what it
had; recent messages and history pages hold messages only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pubsub.codec import ZERO_ID, StreamId, as_str, chat_frame, format_id, frame, parse_id
from pubsub.keys import Keys
from redisconn import RedisClient

# docs/protocol.md: a join without `after` gets the room's most recent messages, up to 50.
RECENT_ON_JOIN = 50

# Replays read the stream in pages (at most ~400 KB of the longest messages,
# about what one paced chunk sends) so a replay holds little in memory while
# it waits for its socket, and one whose socket is gone stops after the page
# in hand.
REPLAY_PAGE = 25

# How many messages lie after an id: from the room's numbering (`n` on each
# entry, `seq` in its meta) without reading them. XLEN bounds the answer, so
# a stream whose numbering is missing or inconsistent (entries stored before
# numbering existed) is never under-counted.
# KEYS: stream, meta. ARGV: after id. Returns {count, trimmed, epoch, known}:
# trimmed 1 if entries after the id were trimmed away (meta `trimmed` is the
# newest id a trim removed), epoch the room's, known 1 if the room has a
# record at all (an epoch or a numbering in its meta, or a stream).
_GAP_LUA = """
local m = redis.call('HMGET', KEYS[2], 'trimmed', 'epoch', 'seq')
local trimmed = 0
if m[1] then
  local a_ms, a_seq = string.match(ARGV[1], '(%d+)-(%d+)')
  local t_ms, t_seq = string.match(m[1], '(%d+)-(%d+)')
  a_ms, a_seq, t_ms, t_seq = tonumber(a_ms), tonumber(a_seq), tonumber(t_ms), tonumber(t_seq)
  if a_ms < t_ms or (a_ms == t_ms and a_seq < t_seq) then trimmed = 1 end
end
local known = (m[2] or m[3] or redis.call('EXISTS', KEYS[1]) == 1) and 1 or 0
local first = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', 1)
if #first == 0 then return {0, trimmed, m[2] or '', known} end
local len = redis.call('XLEN', KEYS[1])
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq'))
local fields, n = first[1][2], nil
for i = 1, #fields, 2 do
  if fields[i] == 'n' then n = tonumber(fields[i + 1]) end
end
if n and seq and seq >= n and seq - n < len then
  return {seq - n + 1, trimmed, m[2] or '', known}
end
return {len, trimmed, m[2] or '', known}
"""


# A history page or the recent messages scan at most this many times the
# entries asked for, past events, before they give what they found.
SCAN_ROUNDS = 4


@dataclass(frozen=True)
class Gap:
    """What lies after a client's last id: how many entries, whether some were
    trimmed away, the room's epoch, and whether the room has a record at all."""

    count: int
    trimmed: bool
    epoch: str
    known: bool


@dataclass(frozen=True)
class Entry:
    key: StreamId
    frame: str
    # An event (`edited` / `deleted` frame) rather than a message.
    event: bool = False


Row = tuple[bytes | str, dict[bytes, bytes]]


def is_event(fields: dict[bytes, bytes]) -> bool:
    return b"ev" in fields


def event_frame(room: str, fields: dict[bytes, bytes], edits: dict[str, str]) -> str | None:
    """An event row as its frame; None for an edit of a message deleted since."""
    target = as_str(fields.get(b"target", b""))
    if fields.get(b"ev") == b"delete":
        return frame("deleted", room=room, id=target)
    text = edits.get(target)
    return None if text is None else frame("edited", room=room, id=target, text=text)


class History:
    """Room history from Redis streams."""

    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._gap = redis.register_script(_GAP_LUA)

    async def gap(self, room: str, after: StreamId) -> Gap:
        """What lies after `after` in `room`, without reading it (one round trip)."""
        keys = [self.keys.stream(room), self.keys.room_meta(room)]
        count, trimmed, epoch, known = await self._gap(keys=keys, args=[format_id(after)])
        return Gap(int(count), bool(int(trimmed)), as_str(epoch), bool(int(known)))

    async def _edits_of(self, room: str, rows: list[Row]) -> dict[str, str]:
        """The latest texts of the edited messages (and event targets) among `rows`."""
        ids = [as_str(raw_id) for raw_id, fields in rows if not is_event(fields)]
        ids += [as_str(fields[b"target"]) for _, fields in rows
                if fields.get(b"ev") == b"edit" and b"target" in fields]
        if not ids:
            return {}
        texts = await self.redis.hmget(self.keys.edits(room), ids)
        return {i: as_str(t) for i, t in zip(ids, texts, strict=True) if t is not None}

    async def _entries(self, room: str, rows: list[Row], events: bool) -> list[Entry]:
        """Rows (oldest first) as frames: messages in their latest text, and with
        `events` the edit and delete events."""
        edits = await self._edits_of(room, rows)
        out: list[Entry] = []
        for raw_id, fields in rows:
            key = parse_id(as_str(raw_id))
            if is_event(fields):
                notice = event_frame(room, fields, edits) if events else None
                if notice is not None:
                    out.append(Entry(key, notice, event=True))
                continue
            msg_id = as_str(raw_id)
            text = edits.get(msg_id)
            out.append(Entry(key, chat_frame(msg_id, room, as_str(fields.get(b"user", b"")),
                                             text if text is not None else
                                             as_str(fields.get(b"text", b"")),
                                             edited=text is not None)))
        return out

    async def recent(self, room: str, count: int = RECENT_ON_JOIN) -> list[Entry]:
        """The room's last `count` messages (events skipped), oldest first."""
        page, _ = await self.before(room, None, count)
        return page

    async def before(
        self, room: str, before: StreamId | None, limit: int
    ) -> tuple[list[Entry], bool]:
        """Up to `limit` messages older than `before` (or the newest), oldest first;
        and whether older ones remain. Events in between are passed over."""
        if before == ZERO_ID:
            return [], False  # nothing is older than the first possible id
        top = f"({format_id(before)}" if before is not None else "+"
        found: list[Row] = []
        more = False
        for _ in range(SCAN_ROUNDS):
            rows: Any = await self.redis.xrevrange(self.keys.stream(room), max=top,
                                                   count=limit + 1)
            more = len(rows) > limit
            found += [row for row in rows[:limit] if not is_event(row[1])]
            if not more or len(found) >= limit:
                break
            top = f"({as_str(rows[limit - 1][0])}"
        more = more or len(found) > limit
        found = found[:limit]
        found.reverse()
        return await self._entries(room, found, events=False), more

    async def after(self, room: str, after: StreamId) -> AsyncIterator[list[Entry]]:
        """Every stored message and event after `after`, oldest first, a page at a time."""
        cursor = after
        while True:
            rows: Any = await self.redis.xrange(
                self.keys.stream(room), min=f"({format_id(cursor)}", count=REPLAY_PAGE
            )
            if not rows:
                return
            yield await self._entries(room, rows, events=True)
            cursor = parse_id(as_str(rows[-1][0]))
            if len(rows) < REPLAY_PAGE:
                return
