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
