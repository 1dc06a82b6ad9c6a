"""Lua scripts that publish: the same text for one Redis and for a Cluster.

Scripts call `redis.call(PUBLISH, ...)`; `PUBLISH` is a Lua local set here to
'PUBLISH' or, on a Cluster, 'SPUBLISH' (the channel is one of the script's
KEYS, so it hashes to the same slot as the room's other keys).
"""

from __future__ import annotations

from redis.commands.core import AsyncScript

from pubsub.keys import Keys
from redisconn import RedisClient


def register(redis: RedisClient, keys: Keys, lua: str) -> AsyncScript:
    prelude = f"local PUBLISH = '{keys.publish_command}'\n"
    script: AsyncScript = redis.register_script(prelude + lua)
    return script


# Redis's clock in ms, as `now`: every instance decides by the same clock.
NOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# A token bucket kept in a hash (`tokens`, `at`): `level` reads it refilled to
# `now`, `take` spends one token. Buckets live `keep_ms` after their last use.
BUCKET_LUA = """
local function bucket_level(key, burst, per_ms, now)
  local b = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(b[1]) or burst
  local at = tonumber(b[2]) or now
  return math.min(burst, tokens + (now - at) * per_ms)
end
local function bucket_take(key, level, now, keep_ms)
  redis.call('HSET', key, 'tokens', level - 1, 'at', now)
  redis.call('PEXPIRE', key, keep_ms)
end
"""
