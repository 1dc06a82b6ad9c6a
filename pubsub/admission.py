"""Bounds on what a user may start: joins and leaves, and new rooms (README: Bounds).

Both are counted in Redis, so every instance shares them: a user cannot
spread a presence flood or a room-creation spree over instances or sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

from pubsub.keys import Keys
from pubsub.publish import DEFAULT_ROOM_IDLE_SECONDS, new_epoch
from pubsub.scripts import BUCKET_LUA, NOW_LUA
from redisconn import RedisClient
from rooms.access import ACCESS_LUA
from rooms.names import dm_users

LOBBY = "lobby"

# Joins and leaves per user, all instances: a refresh with 20 rooms open in
# two tabs fits the burst; past it, one a second. Each can announce a
# `joined` or `left` to the whole room, so a loop of them is a flood.
JOIN_BURST = 60
JOINS_PER_SECOND = 1.0

# New rooms one user may create per day (the room idles out of Redis after
# DEFAULT_ROOM_IDLE_SECONDS; this bounds how many exist at once).
DEFAULT_ROOMS_PER_DAY = 50
DAY_SECONDS = 24 * 3600

# KEYS: the user's join bucket. ARGV: burst, tokens per ms, keep ms. 1: taken.
_TAKE_LUA = NOW_LUA + BUCKET_LUA + """
local level = bucket_level(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
if level < 1 then return 0 end
bucket_take(KEYS[1], level, now, tonumber(ARGV[3]))
return 1
"""

# KEYS: room meta, room stream. ARGV: idle seconds, user, '1' for an admin.
# 1: the room exists and the user may read it (its idle expiry starts over),
# 0: it does not exist, -1: the user may not (rooms/access.py).
_ENTER_ROOM_LUA = NOW_LUA + ACCESS_LUA + """
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then return 0 end
if room_access(KEYS[1], ARGV[2], ARGV[3], now) == 1 then return -1 end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""

# KEYS: the user's count of rooms made today. ARGV: the day's allowance, day
# seconds. 1: one more room allowed.
_COUNT_NEW_ROOM_LUA = """
local made = redis.call('INCR', KEYS[1])
if made == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if made > tonumber(ARGV[1]) then return 0 end
return 1
"""


class Refused(Exception):
    """The user may not do this now; `code` is the docs/protocol.md error code
    sent back in an `error` frame (the socket stays open)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Allowance:
    join_burst: int = JOIN_BURST
    joins_per_second: float = JOINS_PER_SECOND
    rooms_per_day: int = DEFAULT_ROOMS_PER_DAY
    room_idle_seconds: int = DEFAULT_ROOM_IDLE_SECONDS


class Admission:
    """Checks a user's join or leave against the shared bounds."""

    def __init__(self, redis: RedisClient, keys: Keys, allowance: Allowance | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.allowance = allowance or Allowance()
        self._take = redis.register_script(_TAKE_LUA)
        self._enter_room = redis.register_script(_ENTER_ROOM_LUA)
        self._count_new_room = redis.register_script(_COUNT_NEW_ROOM_LUA)

    async def take_turn(self, user: str) -> None:
        """One join or leave; Refused(rate_limited) past the user's allowance."""
        a = self.allowance
        per_ms = a.joins_per_second / 1000
        keep_ms = int(a.join_burst / per_ms) + 1000
        taken = await self._take(keys=[self.keys.join_rate(user)],
                                 args=[a.join_burst, per_ms, keep_ms])
        if not int(taken):
            raise Refused("rate_limited", "too many joins and leaves; wait a moment")

    async def enter(self, user: str, room: str, admin: bool = False) -> None:
        """A join of `room`: counts a turn, asks the room's rule (Refused
        forbidden) and, if the room is new, spends one of the user's rooms for
        today (Refused past it) and makes the user its owner."""
        await self.take_turn(user)
        await self.may_enter(user, room, admin)

    async def may_enter(self, user: str, room: str, admin: bool = False) -> None:
        """The room's rule alone, for a join that spends no turn (the lobby at
        connect); a new room is created with `user` as its owner."""
        a, k = self.allowance, self.keys
        found = int(await self._enter_room(keys=[k.room_meta(room), k.stream(room)],
                                           args=[a.room_idle_seconds, user,
                                                 "1" if admin else "0"]))
        if found == -1:
            raise Refused("forbidden", "you may not enter this room")
        if found == 1:
            return
        if room == LOBBY:  # no owner; its history starts with an epoch all the same
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hsetnx(k.room_meta(room), "epoch", new_epoch())
                pipe.expire(k.room_meta(room), a.room_idle_seconds)
                await pipe.execute()
            return
        if dm_users(room) is not None:
            raise Refused("bad_room", "no such direct message; ask for it with a dm frame")
        await self.count_new_room(user)
        async with self.redis.pipeline(transaction=False) as pipe:
            # The first joiner owns a new public room (a racing one finds it taken).
            pipe.hsetnx(k.room_meta(room), "owner", user)
            pipe.hsetnx(k.room_meta(room), "created_by", user)
            pipe.hsetnx(k.room_meta(room), "epoch", new_epoch())
            pipe.expire(k.room_meta(room), a.room_idle_seconds)
            await pipe.execute()

    async def count_new_room(self, user: str) -> None:
        """Spend one of the user's new rooms for today; Refused(rate_limited) past it."""
        a = self.allowance
        allowed = await self._count_new_room(keys=[self.keys.rooms_made(user)],
                                             args=[a.rooms_per_day, DAY_SECONDS])
        if not int(allowed):
            raise Refused("rate_limited",
                          f"at most {a.rooms_per_day} new rooms a day; join an existing one")
