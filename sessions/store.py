"""The hand-written Redis session store.

A session is `<prefix>session:<id>` holding a msgpack map, with a sliding
idle expiry: every read pushes the expiry forward (GETEX, one round trip).
Ids are 256 random bits from the OS CSPRNG; only ids this store issued exist
in Redis, so a made-up id simply reads as no session.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgpack
from redis.asyncio.cluster import RedisCluster

from redisconn import RedisClient

# A week of inactivity logs a user out: long enough for "remember me" chat use,
# short enough that abandoned sessions do not pile up in Redis.
DEFAULT_IDLE_TTL_SECONDS = 7 * 24 * 3600

# 32 bytes = 256 bits, rendered URL-safe (43 characters).
SESSION_ID_BYTES = 32

# Move a session to a new id in one atomic step: the new key appears and the
# old key disappears together, so no request ever sees both or neither.
# KEYS[3], when given, is the login's pointer to its current session id: open
# WebSockets follow a login across id regenerations through it; KEYS[4] is the
# login's room list, which lives as long as the session does.
_REGENERATE_LUA = """
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
if KEYS[1] ~= KEYS[2] then redis.call('DEL', KEYS[1]) end
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2]) end
if KEYS[4] then redis.call('EXPIRE', KEYS[4], ARGV[2]) end
return 1
"""

SessionData = dict[str, Any]


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


class SessionStore:
    """get / save / regenerate / destroy of sessions kept in Redis."""

    def __init__(
        self, redis: RedisClient, prefix: str = "", idle_ttl: int = DEFAULT_IDLE_TTL_SECONDS
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.idle_ttl = idle_ttl
        self._regenerate = redis.register_script(_REGENERATE_LUA)

    def key(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def login_key(self, login_id: str) -> str:
        return f"{self.prefix}login:{login_id}"

    async def get(self, session_id: str) -> SessionData | None:
        """The session's data, or None; a hit slides the idle expiry."""
        raw = await self.redis.getex(self.key(session_id), ex=self.idle_ttl)
        if raw is None:
            return None
        data = msgpack.unpackb(raw)
        return data if isinstance(data, dict) else None

    async def save(self, session_id: str, data: SessionData) -> None:
        await self.redis.set(self.key(session_id), msgpack.packb(data), ex=self.idle_ttl)

    async def regenerate(self, old_id: str | None, data: SessionData) -> str:
        """Store `data` under a fresh id and delete `old_id`, atomically."""
        new_id = new_session_id()
        old_key = self.key(old_id) if old_id else self.key(new_id)
        keys = [old_key, self.key(new_id)]
        login_id = data.get("login")
        if isinstance(login_id, str):
            keys += [self.login_key(login_id), self.rooms_key(login_id)]
        packed = msgpack.packb(data)
        if isinstance(self.redis, RedisCluster):
            await self._regenerate_in_steps(keys, packed, new_id)
        else:
            await self._regenerate(keys=keys, args=[packed, self.idle_ttl, new_id])
        return new_id

    async def _regenerate_in_steps(self, keys: list[str], packed: bytes, new_id: str) -> None:
        """On a Cluster the keys live on different shards, so no one script can
        move them. The order keeps the guarantee that matters: the new id
        exists before the old one goes, so no request ever sees neither."""
        old_key, new_key, *login_keys = keys
        await self.redis.set(new_key, packed, ex=self.idle_ttl)
        if login_keys:
            pointer, rooms = login_keys
            await self.redis.set(pointer, new_id, ex=self.idle_ttl)
            await self.redis.expire(rooms, self.idle_ttl)
        if old_key != new_key:
            await self.redis.delete(old_key)

    async def destroy(self, session_id: str, login_id: str | None = None) -> None:
        doomed = [self.key(session_id)]
        if login_id:
            doomed += [self.login_key(login_id), self.rooms_key(login_id)]
        await self.redis.delete(*doomed)  # a Cluster client splits it by slot

    def rooms_key(self, login_id: str) -> str:
        return f"{self.prefix}login:{login_id}:rooms"

    async def rooms(self, login_id: str) -> list[str]:
        """The rooms this login had joined, so a refresh or reconnect brings them back."""
        members = await self.redis.smembers(self.rooms_key(login_id))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def add_room(self, login_id: str, room: str) -> None:
        key = self.rooms_key(login_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(key, room)
            pipe.expire(key, self.idle_ttl)
            await pipe.execute()

    async def remove_room(self, login_id: str, room: str) -> None:
        await self.redis.srem(self.rooms_key(login_id), room)

    async def login_alive(self, login_id: str, touch: bool = False) -> bool:
        """Whether the login's current session still exists; `touch` slides its expiry."""
        return (await self.logins_alive({login_id: touch}))[login_id]

    async def logins_alive(self, touches: dict[str, bool]) -> dict[str, bool]:
        """`login_alive` for many logins at once: {login: touch} -> {login: alive}.

        Three pipelined round trips for the whole batch instead of two or more
        per login (the periodic check of 10,000 idle sockets' logins was most
        of their CPU). Single-key commands only, so it stays valid when
        sessions spread over a Redis Cluster.
        """
        logins = list(touches)
        async with self.redis.pipeline(transaction=False) as pipe:
            for login_id in logins:
                pipe.get(self.login_key(login_id))
            session_ids = await pipe.execute()
        alive = dict.fromkeys(logins, False)
        current = {login_id: (sid.decode() if isinstance(sid, bytes) else sid)
                   for login_id, sid in zip(logins, session_ids, strict=True) if sid is not None}
        if not current:
            return alive
        async with self.redis.pipeline(transaction=False) as pipe:
            for login_id, session_id in current.items():
                if touches[login_id]:
                    pipe.getex(self.key(session_id), ex=self.idle_ttl)
                else:
                    pipe.exists(self.key(session_id))
            found = await pipe.execute()
        for login_id, answer in zip(current, found, strict=True):
            alive[login_id] = bool(answer) if not touches[login_id] else answer is not None
        touched = [login_id for login_id in current if touches[login_id] and alive[login_id]]
        if touched:
            async with self.redis.pipeline(transaction=False) as pipe:
                for login_id in touched:
                    pipe.expire(self.login_key(login_id), self.idle_ttl)
                    pipe.expire(self.rooms_key(login_id), self.idle_ttl)
                await pipe.execute()
        return alive
