"""Publishing a chat message: one Redis round trip, once per `cid`, within the user's rate."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from pubsub.codec import as_str
from pubsub.keys import Keys
from pubsub.scripts import BUCKET_LUA, NOW_LUA, register
from redisconn import Topology
from rooms.access import ACCESS_LUA

# Each room keeps this many recent messages (trimmed in batches of
# TRIM_SLACK, so it holds between this and this + TRIM_SLACK) ...
DEFAULT_STREAM_MAXLEN = 10_000
# ... and at most this many bytes of names and texts: without it one room of
# 4,000-character messages held ~155 MB at the count cap alone.
DEFAULT_ROOM_MAX_BYTES = 8 * 1024 * 1024
# A room's stream and bookkeeping expire after this long without a message or
# a join, so abandoned rooms do not hold Redis memory forever.
DEFAULT_ROOM_IDLE_SECONDS = 365 * 24 * 3600
TRIM_SLACK = 100

# docs/protocol.md: a resend with the same cid within 10 minutes is acknowledged
# again and not published twice.
CID_DEDUPE_SECONDS = 600

# One login's refused sends within this window are its strikes; enough of them
# close its socket (1008). Kept in Redis with the login's bucket, so
# reconnecting, or moving to another instance, does not wipe the record.
STRIKE_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per user, kept in Redis so every instance shares it.

    docs/protocol.md: 20 chat frames per user per 10 s, short bursts allowed. The
    bucket refills `per_window / window_seconds` tokens a second and holds at
    most `burst`. `per_window = 0` switches the limit off (benchmarks).
    """

    per_window: int = 20
    window_seconds: float = 10.0
    burst: int = 10

    @property
    def enabled(self) -> bool:
        return self.per_window > 0

    @property
    def tokens_per_ms(self) -> float:
        return self.per_window / (self.window_seconds * 1000)


@dataclass(frozen=True)
class RoomCaps:
    """What one room may hold in Redis (README: Bounds)."""

    max_messages: int = DEFAULT_STREAM_MAXLEN
    max_bytes: int = DEFAULT_ROOM_MAX_BYTES
    idle_seconds: int = DEFAULT_ROOM_IDLE_SECONDS


# Drop the oldest entries while the stream is over its count or byte cap:
# batches of up to 100, at most 8 batches per publish (the next publish goes on).
_TRIM_LUA = """
local function entry_bytes(fields)
  local size = 0
  for i = 1, #fields, 2 do
    if fields[i] == 'user' or fields[i] == 'text' then size = size + #fields[i + 1] end
  end
  return size
end
local function trim(stream, meta, edits, maxlen, maxbytes, bytes)
  local len = redis.call('XLEN', stream)
  if len <= maxlen + SLACK and bytes <= maxbytes then return end
  for _ = 1, 8 do
    local rows = redis.call('XRANGE', stream, '-', '+', 'COUNT', 101)
    local drop, freed = 0, 0
    while drop < #rows - 1 and (len - drop > maxlen or bytes - freed > maxbytes) do
      drop = drop + 1
      freed = freed + entry_bytes(rows[drop][2])
      local edited = redis.call('HGET', edits, rows[drop][1])
      if edited then
        freed = freed + #edited
        redis.call('HDEL', edits, rows[drop][1])
      end
    end
    if drop == 0 then return end
    redis.call('XTRIM', stream, 'MINID', '=', rows[drop + 1][1])
    -- The newest id trimmed: a resume from before it cannot be served whole
    -- (a delete, XDEL, never moves it).
    redis.call('HSET', meta, 'trimmed', rows[drop][1])
    len = len - drop
    bytes = redis.call('HINCRBY', meta, 'bytes', -freed)
    if len <= maxlen and bytes <= maxbytes then return end
  end
end
""".replace("SLACK", str(TRIM_SLACK))

# KEYS: stream, dedupe key, live channel, room meta (all tagged with the room),
#       the user's rate bucket, the login's strike record, the room's edits.
# ARGV: room, user, text, cid ('' for none), '1' if the user is an admin,
#       a new epoch (kept only if the room has none: its history starts here).
# The publisher's settings (caps, rate limit) are written into the script's
# text (`publish_lua`), not sent with every message.
# Returns {id, status[, strikes]}: status 0 published, 1 repeat of a published
# cid, 2 refused by the rate limit (id is '', strikes: the login's refusals in
# the window), 3 forbidden (banned, or not a member of a private room), 4 muted.
# The room's rule (rooms/access.py) is asked here, in the same round trip.
# Every entry carries `n`, its number in the room (meta `seq`),
# so a resume can count a gap without reading it.
# The first write comes after every check, and Redis refuses a script for
# memory (noeviction) at its first write: a refused publish wrote nothing.
_PUBLISH_BODY = NOW_LUA + BUCKET_LUA + ACCESS_LUA + _TRIM_LUA + """
local access = room_access(KEYS[4], ARGV[2], ARGV[5], now)
if access == 1 then return {'', 3} end
if access == 2 then return {'', 4} end
local cid = ARGV[4]
if cid ~= '' then
  local seen = redis.call('GET', KEYS[2])
  if seen then return {seen, 1} end
end
if BURST > 0 then
  local level = bucket_level(KEYS[5], BURST, PER_MS, now)
  if level < 1 then
    local s = redis.call('HMGET', KEYS[6], 'strikes', 'since')
    local strikes, since = tonumber(s[1]) or 0, tonumber(s[2]) or now
    if now - since > STRIKE_MS then strikes, since = 0, now end
    redis.call('HSET', KEYS[6], 'strikes', strikes + 1, 'since', since)
    redis.call('PEXPIRE', KEYS[6], STRIKE_MS)
    return {'', 2, strikes + 1}
  end
  bucket_take(KEYS[5], level, now, math.ceil(BURST / PER_MS) + 1000)
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('HSET', KEYS[4], 'bytes', 0) end
redis.call('HSETNX', KEYS[4], 'epoch', ARGV[6])
local bytes = redis.call('HINCRBY', KEYS[4], 'bytes', #ARGV[2] + #ARGV[3])
local n = redis.call('HINCRBY', KEYS[4], 'seq', 1)
local id = redis.call('XADD', KEYS[1], '*', 'user', ARGV[2], 'text', ARGV[3], 'n', n)
redis.call(PUBLISH, KEYS[3],
           cmsgpack.pack({t = 'chat', id = id, room = ARGV[1], user = ARGV[2], text = ARGV[3]}))
if cid ~= '' then redis.call('SET', KEYS[2], id, 'EX', DEDUPE_S) end
trim(KEYS[1], KEYS[4], KEYS[7], MAXLEN, MAXBYTES, bytes)
redis.call('EXPIRE', KEYS[1], IDLE_S)
redis.call('EXPIRE', KEYS[4], IDLE_S)
redis.call('EXPIRE', KEYS[7], IDLE_S)
return {id, 0}
"""


def publish_lua(caps: RoomCaps, rate: RateLimit) -> str:
    """The publish script with these settings in it: each message then sends
    6 arguments instead of 13 (less to pack here and to parse in Redis)."""
    burst = rate.burst if rate.enabled else 0
    settings = {
        "MAXLEN": caps.max_messages, "MAXBYTES": caps.max_bytes, "IDLE_S": caps.idle_seconds,
        "DEDUPE_S": CID_DEDUPE_SECONDS, "STRIKE_MS": STRIKE_WINDOW_SECONDS * 1000,
        "BURST": burst, "PER_MS": repr(float(rate.tokens_per_ms)) if burst else 0,
    }
    prelude = "".join(f"local {name} = {value}\n" for name, value in settings.items())
    return prelude + _PUBLISH_BODY


# A room's epoch need only differ from every earlier one of that room: a random
# prefix per process and a counter make one without a system call per publish.
_EPOCH_PREFIX = secrets.token_hex(6)
_epoch_numbers = itertools.count()


def new_epoch() -> str:
    """A room's epoch: changes whenever its history starts over (docs/protocol.md)."""
    return f"{_EPOCH_PREFIX}{next(_epoch_numbers):x}"


# The script's status codes (0 is a message published now).
REPEAT, RATE_LIMITED, FORBIDDEN, MUTED = 1, 2, 3, 4


@dataclass(frozen=True)
class Published:
    id: str
    duplicate: bool = False
    rate_limited: bool = False
    # With rate_limited: the login's refusals within STRIKE_WINDOW_SECONDS.
    strikes: int = 0
    forbidden: bool = False
    muted: bool = False


class NotReplicated(RedisError):
    """Stored on the primary, but fewer replicas than asked confirmed it: no ack."""


# How long a publish waits for its replicas (WAIT) before it is refused.
REPLICA_WAIT_MS = 1000


class Publisher:
    """Stores a message in its room's stream and publishes it live, atomically.

    With `wait_replicas` > 0 (one Redis or Sentinel), the script and a WAIT
    go in one pipeline on one connection: the ack is sent only once that many
    replicas hold the message, so a failover to one of them loses no acked
    message. A refused message is resent by the client with its cid.
    """

    def __init__(
        self,
        topology: Topology,
        keys: Keys,
        caps: RoomCaps | None = None,
        rate: RateLimit | None = None,
        wait_replicas: int = 0,
    ) -> None:
        self.redis = topology.client
        self.keys = keys
        self.caps = caps or RoomCaps()
        self.rate = rate or RateLimit()
        # WAIT needs one server: replicas confirm what its connection wrote.
        self._waits_on = topology.single_node if wait_replicas else None
        self.wait_replicas = wait_replicas if self._waits_on is not None else 0
        self._script = register(self.redis, keys, publish_lua(self.caps, self.rate))
        # Publishes of one loop turn share a write and a read (internals/redis_lane.py).
        self._lane = topology.lane if not self.wait_replicas else None

    async def publish(
        self, room: str, user: str, text: str, cid: str = "", login: str = "",
        admin: bool = False,
    ) -> Published:
        """Store and publish; `login` (the sender's session) carries its strikes;
        `admin`: the sender is a server admin (passes the room's rule)."""
        k = self.keys
        keys = [k.stream(room), k.dedupe(room, user, cid), k.channel(room), k.room_meta(room),
                k.rate(user, room), k.strikes(login or user, room), k.edits(room)]
        args = [room, user, text, cid, "1" if admin else "0", new_epoch()]
        if self._lane is not None:
            reply = await self._publish_on_lane(keys, args)
        elif not self.wait_replicas:
            reply = await self._script(keys=keys, args=args)
        else:
            reply = await self._publish_replicated(keys, args)
        status = int(reply[1])
        return Published(
            id=as_str(reply[0]), duplicate=status == REPEAT, rate_limited=status == RATE_LIMITED,
            strikes=int(reply[2]) if status == RATE_LIMITED else 0,
            forbidden=status == FORBIDDEN, muted=status == MUTED,
        )

    async def _publish_on_lane(self, keys: list[str], args: list[str]) -> Any:
        assert self._lane is not None
        try:
            return await self._lane.call("EVALSHA", self._script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis lost its script cache (a restart, a failover): redis-py loads it again.
            return await self._script(keys=keys, args=args)

    async def _publish_replicated(
        self, keys: list[str], args: list[str]
    ) -> list[object]:
        assert self._waits_on is not None
        async with self._waits_on.pipeline(transaction=False) as pipe:
            await self._script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait_replicas, REPLICA_WAIT_MS)
            reply, replicas = await pipe.execute()
        if int(reply[1]) in (0, REPEAT) and int(replicas) < self.wait_replicas:
            raise NotReplicated(f"{replicas} of {self.wait_replicas} replicas confirmed")
        result: list[object] = reply
        return result
