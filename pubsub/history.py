"""Reading a room's past from its stream: recent messages, and what came after an id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pubsub.codec import ZERO_ID, StreamId, as_str, chat_frame, format_id, parse_id
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
# KEYS: stream, meta. ARGV: after id. Returns the count.
_GAP_LUA = """
local first = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', 1)
if #first == 0 then return 0 end
local len = redis.call('XLEN', KEYS[1])
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq'))
local fields, n = first[1][2], nil
for i = 1, #fields, 2 do
  if fields[i] == 'n' then n = tonumber(fields[i + 1]) end
end
if n and seq and seq >= n and seq - n < len then return seq - n + 1 end
return len
"""


@dataclass(frozen=True)
class Entry:
    key: StreamId
    frame: str


def _entry(room: str, raw_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
    """One stream row as a ready-to-send `chat` frame."""
    msg_id = as_str(raw_id)
    user = as_str(fields.get(b"user", b""))
    text = as_str(fields.get(b"text", b""))
    return Entry(key=parse_id(msg_id), frame=chat_frame(msg_id, room, user, text))


class History:
    """Room history from Redis streams."""

    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._gap = redis.register_script(_GAP_LUA)

    async def count_after(self, room: str, after: StreamId) -> int:
        """How many stored messages of `room` come after `after` (one round trip)."""
        keys = [self.keys.stream(room), self.keys.room_meta(room)]
        return int(await self._gap(keys=keys, args=[format_id(after)]))

    async def recent(self, room: str, count: int = RECENT_ON_JOIN) -> list[Entry]:
        rows: Any = await self.redis.xrevrange(self.keys.stream(room), count=count)
        return [_entry(room, raw_id, fields) for raw_id, fields in reversed(rows)]

    async def before(
        self, room: str, before: StreamId | None, limit: int
    ) -> tuple[list[Entry], bool]:
        """Up to `limit` messages older than `before` (or the newest), oldest first;
        and whether older ones remain."""
        if before == ZERO_ID:
            return [], False  # nothing is older than the first possible id
        top = f"({format_id(before)}" if before is not None else "+"
        rows: Any = await self.redis.xrevrange(self.keys.stream(room), max=top, count=limit + 1)
        page = [_entry(room, raw_id, fields) for raw_id, fields in rows[:limit]]
        page.reverse()
        return page, len(rows) > limit

    async def after(self, room: str, after: StreamId) -> AsyncIterator[list[Entry]]:
        """Every stored message after `after`, oldest first, a page at a time."""
        cursor = after
        while True:
            rows: Any = await self.redis.xrange(
                self.keys.stream(room), min=f"({format_id(cursor)}", count=REPLAY_PAGE
            )
            if not rows:
                return
            page = [_entry(room, raw_id, fields) for raw_id, fields in rows]
            yield page
            cursor = page[-1].key
            if len(rows) < REPLAY_PAGE:
                return
