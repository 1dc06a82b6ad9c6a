"""Edits and deletes of stored messages: one Lua round trip each, as events in
the room's order (docs/protocol.md: Edits and deletes).

An edit keeps the message where it is and puts its new text in the room's
`edits` hash (only the latest text is kept: earlier ones are gone); a delete
removes the message from the stream (XDEL) and its edited text from the hash,
so no reader, backup or operator finds the text again. Either appends an event
entry (`ev`, `target`, `by`; never a text) to the stream and publishes it, so
live sockets and every later replay get it in its place.
"""

from __future__ import annotations

from dataclasses import dataclass

from pubsub.codec import as_str
from pubsub.keys import Keys
from pubsub.publish import RateLimit, RoomCaps
from pubsub.scripts import BUCKET_LUA, NOW_LUA, register
from redisconn import Topology
from rooms.access import ACCESS_LUA

# KEYS: stream, meta, edits, live channel, the user's rate bucket.
# ARGV: room, user, target id, new text ('' for a delete), '1' for an admin,
#       burst (0: no limit), tokens per ms, idle seconds, 'edit' or 'delete'.
# Returns {event id, status, author}: status 0 done, 2 rate limited,
# 3 forbidden, 4 muted, 5 no such message.
_CHANGE_LUA = NOW_LUA + BUCKET_LUA + ACCESS_LUA + """
local user, target, kind = ARGV[2], ARGV[3], ARGV[9]
local access = room_access(KEYS[2], user, ARGV[5], now)
if access == 1 then return {'', 3, ''} end
local found = redis.call('XRANGE', KEYS[1], target, target)
if #found == 0 then return {'', 5, ''} end
local fields, author, old = found[1][2], nil, ''
for i = 1, #fields, 2 do
  if fields[i] == 'ev' then return {'', 5, ''} end
  if fields[i] == 'user' then author = fields[i + 1] end
  if fields[i] == 'text' then old = fields[i + 1] end
end
if kind == 'edit' then
  if author ~= user then return {'', 3, author} end
  if access == 2 then return {'', 4, author} end
elseif author ~= user and ARGV[5] ~= '1' then
  local f = redis.call('HMGET', KEYS[2], 'owner', 'role:' .. user)
  if f[1] ~= user and f[2] ~= 'moderator' then return {'', 3, author} end
end
local burst = tonumber(ARGV[6])
if burst > 0 then
  local per_ms = tonumber(ARGV[7])
  local level = bucket_level(KEYS[5], burst, per_ms, now)
  if level < 1 then return {'', 2, author} end
  bucket_take(KEYS[5], level, now, math.ceil(burst / per_ms) + 1000)
end
local previous = redis.call('HGET', KEYS[3], target)
local n = redis.call('HINCRBY', KEYS[2], 'seq', 1)
local id
if kind == 'edit' then
  redis.call('HSET', KEYS[3], target, ARGV[4])
  redis.call('HINCRBY', KEYS[2], 'bytes', #ARGV[4] - (previous and #previous or 0))
  id = redis.call('XADD', KEYS[1], '*', 'ev', 'edit', 'target', target, 'by', user, 'n', n)
  redis.call(PUBLISH, KEYS[4], cmsgpack.pack({t = 'edit', id = id, room = ARGV[1],
                                              target = target, text = ARGV[4]}))
else
  redis.call('XDEL', KEYS[1], target)
  redis.call('HDEL', KEYS[3], target)
  redis.call('HINCRBY', KEYS[2], 'bytes',
             -(#author + #old + (previous and #previous or 0)))
  id = redis.call('XADD', KEYS[1], '*', 'ev', 'delete', 'target', target, 'by', user, 'n', n)
  redis.call(PUBLISH, KEYS[4], cmsgpack.pack({t = 'delete', id = id, room = ARGV[1],
                                              target = target}))
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[8]) end
return {id, 0, author}
"""

DONE, RATE_LIMITED, FORBIDDEN, MUTED, NO_SUCH_MESSAGE = 0, 2, 3, 4, 5


@dataclass(frozen=True)
class Change:
    """What an edit or delete did: its event id (empty when refused), the status,
    and the message's author (empty if there was no such message)."""

    id: str
    status: int
    author: str


class Changes:
    def __init__(self, topology: Topology, keys: Keys, caps: RoomCaps | None = None,
                 rate: RateLimit | None = None) -> None:
        self.keys = keys
        self.caps = caps or RoomCaps()
        self.rate = rate or RateLimit()
        self._script = register(topology.client, keys, _CHANGE_LUA)

    async def apply(self, kind: str, room: str, user: str, target: str, text: str = "",
                    admin: bool = False) -> Change:
        """`kind` is "edit" (with `text`) or "delete"."""
        k, rate = self.keys, self.rate
        burst = rate.burst if rate.enabled else 0
        reply = await self._script(
            keys=[k.stream(room), k.room_meta(room), k.edits(room), k.channel(room),
                  k.rate(user, room)],
            args=[room, user, target, text, "1" if admin else "0", burst,
                  rate.tokens_per_ms if burst else 0, self.caps.idle_seconds, kind])
        return Change(as_str(reply[0]), int(reply[1]), as_str(reply[2]))
