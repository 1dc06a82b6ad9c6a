"""Publishing a chat message: one Redis round trip, once per `cid`."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from pubsub.codec import as_str
from pubsub.keys import Keys

# Each room keeps about this many recent messages (approximate MAXLEN ~ lets
# Redis trim whole nodes, which is far cheaper than an exact cap).
DEFAULT_STREAM_MAXLEN = 10_000

# PROTOCOL.md: a resend with the same cid within 10 minutes is acknowledged
# again and not published twice.
CID_DEDUPE_SECONDS = 600

# KEYS: stream, dedupe key, live channel (all tagged with the room).
# ARGV: room, user, text, maxlen, cid ('' for none), dedupe seconds.
# Returns {id, 1 if this cid was already published}.
_PUBLISH_LUA = """
local cid = ARGV[5]
if cid ~= '' then
  local seen = redis.call('GET', KEYS[2])
  if seen then return {seen, 1} end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*',
                      'user', ARGV[2], 'text', ARGV[3])
redis.call('PUBLISH', KEYS[3],
           cmsgpack.pack({t = 'chat', id = id, room = ARGV[1], user = ARGV[2], text = ARGV[3]}))
if cid ~= '' then redis.call('SET', KEYS[2], id, 'EX', ARGV[6]) end
return {id, 0}
"""


@dataclass(frozen=True)
class Published:
    id: str
    duplicate: bool


class Publisher:
    """Stores a message in its room's stream and publishes it live, atomically."""

    def __init__(self, redis: Redis, keys: Keys, maxlen: int = DEFAULT_STREAM_MAXLEN) -> None:
        self.keys = keys
        self.maxlen = maxlen
        self._script = redis.register_script(_PUBLISH_LUA)

    async def publish(self, room: str, user: str, text: str, cid: str = "") -> Published:
        k = self.keys
        reply = await self._script(
            keys=[k.stream(room), k.dedupe(room, cid), k.channel(room)],
            args=[room, user, text, self.maxlen, cid, CID_DEDUPE_SECONDS],
        )
        return Published(id=as_str(reply[0]), duplicate=bool(int(reply[1])))
