"""Publishing a chat message: one Redis round trip, once per `cid`, within the user's rate."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from pubsub.codec import as_str
from pubsub.keys import Keys
from pubsub.scripts import register
from redisconn import RedisClient

# Each room keeps about this many recent messages (approximate MAXLEN ~ lets
# Redis trim whole nodes, which is far cheaper than an exact cap).
DEFAULT_STREAM_MAXLEN = 10_000

# PROTOCOL.md: a resend with the same cid within 10 minutes is acknowledged
# again and not published twice.
CID_DEDUPE_SECONDS = 600


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per user, kept in Redis so every instance shares it.

    PROTOCOL.md: 20 chat frames per user per 10 s, short bursts allowed. The
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


# KEYS: stream, dedupe key, live channel (all tagged with the room), rate bucket.
# ARGV: room, user, text, maxlen, cid ('' for none), dedupe seconds,
#       burst (0: no limit), tokens per ms.
# Returns {id, status}: status 0 published, 1 repeat of a published cid,
# 2 refused by the rate limit (id is '').
_PUBLISH_LUA = """
local cid = ARGV[5]
if cid ~= '' then
  local seen = redis.call('GET', KEYS[2])
  if seen then return {seen, 1} end
end
local burst = tonumber(ARGV[7])
if burst > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local rate = tonumber(ARGV[8])
  local bucket = redis.call('HMGET', KEYS[4], 'tokens', 'at')
  local tokens = tonumber(bucket[1]) or burst
  local at = tonumber(bucket[2]) or now
  tokens = math.min(burst, tokens + (now - at) * rate)
  if tokens < 1 then return {'', 2} end
  redis.call('HSET', KEYS[4], 'tokens', tokens - 1, 'at', now)
  redis.call('PEXPIRE', KEYS[4], math.ceil(burst / rate) + 1000)
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*',
                      'user', ARGV[2], 'text', ARGV[3])
redis.call(PUBLISH, KEYS[3],
           cmsgpack.pack({t = 'chat', id = id, room = ARGV[1], user = ARGV[2], text = ARGV[3]}))
if cid ~= '' then redis.call('SET', KEYS[2], id, 'EX', ARGV[6]) end
return {id, 0}
"""

PUBLISHED, REPEAT, RATE_LIMITED = 0, 1, 2


@dataclass(frozen=True)
class Published:
    id: str
    duplicate: bool = False
    rate_limited: bool = False


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
        redis: RedisClient,
        keys: Keys,
        maxlen: int = DEFAULT_STREAM_MAXLEN,
        rate: RateLimit | None = None,
        wait_replicas: int = 0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        self.rate = rate or RateLimit()
        self.wait_replicas = wait_replicas if isinstance(redis, Redis) else 0
        self._script = register(redis, keys, _PUBLISH_LUA)

    async def publish(self, room: str, user: str, text: str, cid: str = "") -> Published:
        k = self.keys
        burst = self.rate.burst if self.rate.enabled else 0
        keys = [k.stream(room), k.dedupe(room, cid), k.channel(room), k.rate(user, room)]
        args: list[str | int | float] = [room, user, text, self.maxlen, cid, CID_DEDUPE_SECONDS,
                burst, self.rate.tokens_per_ms if burst else 0]
        if not self.wait_replicas:
            reply = await self._script(keys=keys, args=args)
        else:
            reply = await self._publish_replicated(keys, args)
        status = int(reply[1])
        return Published(
            id=as_str(reply[0]), duplicate=status == REPEAT, rate_limited=status == RATE_LIMITED
        )

    async def _publish_replicated(
        self, keys: list[str], args: list[str | int | float]
    ) -> list[object]:
        assert isinstance(self.redis, Redis)
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait_replicas, REPLICA_WAIT_MS)
            reply, replicas = await pipe.execute()
        if int(reply[1]) != RATE_LIMITED and int(replicas) < self.wait_replicas:
            raise NotReplicated(f"{replicas} of {self.wait_replicas} replicas confirmed")
        result: list[object] = reply
        return result
