"""Who is in a room, across every instance, surviving the crash of any of them.

Per room, Redis keeps:
- `presence` ZSET: user -> the latest expiry (ms) of any of their entries;
- `presence:<user>` HASH: instance -> expiry (ms) of that instance's entry.

Each instance refreshes its entries every PRESENCE_REFRESH_SECONDS with a
PRESENCE_TTL_SECONDS expiry, so the entries of a dead instance lapse by
themselves. `joined` is published when a user's first live entry appears and
`left` when their last one goes (explicit leave, or expiry found by a sweep),
so a reconnect inside the expiry window announces nothing. All decisions run
in Lua on Redis's clock, so instances never disagree about time.
"""

from __future__ import annotations

from redis.exceptions import NoScriptError

from pubsub.codec import as_str
from pubsub.keys import Keys
from pubsub.scripts import register
from redisconn import Topology

# A dead instance's users are shown as gone after at most this long.
PRESENCE_TTL_SECONDS = 15
# Refresh well inside the TTL so one late refresh does not flap presence.
PRESENCE_REFRESH_SECONDS = 5
# A socket that closes without saying `leave` (network drop, instance drain)
# keeps its user present this long, so a reconnect announces nothing.
RECONNECT_GRACE_SECONDS = 10

# Presence keys expire this long after their last write: live instances
# rewrite them every PRESENCE_REFRESH_SECONDS, so only the keys of rooms every
# instance has left (or of instances that all died) lapse, instead of staying
# in Redis for good.
PRESENCE_KEY_TTL_MS = 4 * (PRESENCE_TTL_SECONDS + RECONNECT_GRACE_SECONDS) * 1000

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local KEY_TTL = KEY_TTL_MS
""".replace("KEY_TTL_MS", str(PRESENCE_KEY_TTL_MS))

# Tell the room a user `joined` or `left`, and drop users whose every entry has
# lapsed, announcing them gone. KEYS: presence zset, live channel. ARGV: room.
_SWEEP = """
local function announce(kind, user)
  redis.call(PUBLISH, KEYS[2], cmsgpack.pack({t = kind, room = ARGV[1], user = user}))
end
local function sweep(now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
  for _, user in ipairs(gone) do
    redis.call('ZREM', KEYS[1], user)
    redis.call('DEL', KEYS[1] .. ':' .. user)
    announce('left', user)
  end
  return #gone
end
"""

# KEYS: presence zset, live channel, the user's hash.
# ARGV: room, user, instance, expiry ms.
_ENTER_LUA = _NOW + _SWEEP + """
sweep(now)
local present = redis.call('ZSCORE', KEYS[1], ARGV[2])
local expiry = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[3], ARGV[3], expiry)
redis.call('ZADD', KEYS[1], 'GT', expiry, ARGV[2])
redis.call('PEXPIRE', KEYS[3], KEY_TTL)
redis.call('PEXPIRE', KEYS[1], KEY_TTL)
if not present then
  announce('joined', ARGV[2])
  return 1
end
return 0
"""

# KEYS: presence zset, live channel, the user's hash.
# ARGV: room, user, instance, grace ms (0: left on purpose, at once).
_EXIT_LUA = _NOW + _SWEEP + """
local grace = tonumber(ARGV[4])
if grace > 0 then
  redis.call('HSET', KEYS[3], ARGV[3], now + grace)
  redis.call('PEXPIRE', KEYS[3], KEY_TTL)
else
  redis.call('HDEL', KEYS[3], ARGV[3])
end
local latest = -1
local entries = redis.call('HGETALL', KEYS[3])
for i = 2, #entries, 2 do
  local e = tonumber(entries[i])
  if e > latest then latest = e end
end
if latest > now then
  redis.call('ZADD', KEYS[1], latest, ARGV[2])
  return 0
end
redis.call('ZADD', KEYS[1], 0, ARGV[2])
sweep(now)
return 1
"""

# A user another instance swept out while still here (this instance's refresh
# came late, so its entries lapsed and `left` went out) is announced `joined`
# again: every client's list matches the ZSET once more.
# KEYS: presence zset, live channel. ARGV: room, instance, expiry ms, users...
_REFRESH_LUA = _NOW + _SWEEP + """
local expiry = now + tonumber(ARGV[3])
for i = 4, #ARGV do
  local user = ARGV[i]
  local present = redis.call('ZSCORE', KEYS[1], user)
  redis.call('HSET', KEYS[1] .. ':' .. user, ARGV[2], expiry)
  redis.call('PEXPIRE', KEYS[1] .. ':' .. user, KEY_TTL)
  redis.call('ZADD', KEYS[1], 'GT', expiry, user)
  if not present then
    announce('joined', user)
  end
end
redis.call('PEXPIRE', KEYS[1], KEY_TTL)
return sweep(now)
"""

# KEYS: presence zset, live channel. ARGV: room.
_LIST_LUA = _NOW + _SWEEP + """
sweep(now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


class Presence:
    """Room presence shared by all instances; this one speaks for `instance`."""

    def __init__(self, topology: Topology, keys: Keys, instance: str) -> None:
        self.keys = keys
        self.instance = instance
        self._pipelined = topology.pipelined
        redis = topology.client
        self._enter = register(redis, keys, _ENTER_LUA)
        self._exit = register(redis, keys, _EXIT_LUA)
        self._refresh = register(redis, keys, _REFRESH_LUA)
        self._list = register(redis, keys, _LIST_LUA)

    def _room_keys(self, room: str) -> list[str]:
        return [self.keys.presence(room), self.keys.channel(room)]

    async def enter(self, room: str, user: str) -> bool:
        """Mark `user` present here; True when that made them newly present."""
        reply = await self._enter(
            keys=[*self._room_keys(room), self.keys.presence_of(room, user)],
            args=[room, user, self.instance, PRESENCE_TTL_SECONDS * 1000],
        )
        return bool(reply)

    async def exit(self, room: str, user: str, *, on_purpose: bool) -> bool:
        """The user's last local socket left the room; True if they are now gone."""
        grace_ms = 0 if on_purpose else RECONNECT_GRACE_SECONDS * 1000
        reply = await self._exit(
            keys=[*self._room_keys(room), self.keys.presence_of(room, user)],
            args=[room, user, self.instance, grace_ms],
        )
        return bool(reply)

    async def refresh(self, room: str, users: list[str]) -> None:
        """Keep this instance's users of `room` present; sweep out lapsed ones."""
        await self._refresh(
            keys=self._room_keys(room),
            args=[room, self.instance, PRESENCE_TTL_SECONDS * 1000, *users],
        )

    async def refresh_many(self, rooms: dict[str, list[str]]) -> None:
        """`refresh` for many rooms, their scripts sent together (one write and
        one read on one server: a round trip per room was most of an idle
        process's CPU with many small rooms)."""
        ttl_ms = PRESENCE_TTL_SECONDS * 1000
        sha = self._refresh.sha
        try:
            await self._pipelined([
                ("EVALSHA", sha, 2, *self._room_keys(room), room, self.instance, ttl_ms, *users)
                for room, users in rooms.items()])
        except NoScriptError:
            # Redis lost its script cache (a restart, a failover): redis-py
            # loads it again. A room refreshed twice is only refreshed.
            for room, users in rooms.items():
                await self.refresh(room, users)

    async def members(self, room: str) -> list[str]:
        reply = await self._list(keys=self._room_keys(room), args=[room])
        return sorted(as_str(user) for user in reply)
