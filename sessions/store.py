"""The hand-written Redis session store.

A session is `<prefix>session:<id>` holding a msgpack map, with a sliding
idle expiry: every read pushes the expiry forward (GETEX, one round trip).
Ids are 256 random bits from the OS CSPRNG; only ids this store issued exist
in Redis, so a made-up id simply reads as no session.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgpack

from redisconn import Topology

# A week of inactivity logs a user out: long enough for "remember me" chat use,
# short enough that abandoned sessions do not pile up in Redis.
DEFAULT_IDLE_TTL_SECONDS = 7 * 24 * 3600

# 32 bytes = 256 bits, rendered URL-safe (43 characters).
SESSION_ID_BYTES = 32

# How long a replaced session id still names its login, for a logout that
# raced the replacement (a page load or /session probe) and carries the old id.
MOVED_MEMORY_SECONDS = 60

# A user's logins (sessions) at once, over all devices; a new login past it
# ends the oldest, so neither a script nor a forgotten browser can pile up
# sessions in Redis, and the cap can never lock the user out.
DEFAULT_MAX_LOGINS_PER_USER = 30

# Move a session to a new id in one atomic step: the new key appears and the
# old key disappears together, so no request ever sees both or neither.
# KEYS[3], when given, is the login's pointer to its current session id: open
# WebSockets follow a login across id regenerations through it; KEYS[4] is the
# login's room list, which lives as long as the session does.
# ARGV[4], when not '', is the id the pointer must still name: a logout (which
# deletes the pointer) or another tab's regenerate that came first wins, and
# this one changes nothing (returns 0), so a logout can never be undone.
# KEYS[5], with a login, remembers for MOVED_MEMORY_SECONDS which login the
# old id was, so a logout that still carries it ends the login all the same.
_REGENERATE_LUA = """
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[4] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
if KEYS[1] ~= KEYS[2] then
  redis.call('DEL', KEYS[1])
  if KEYS[5] then redis.call('SET', KEYS[5], ARGV[5], 'EX', ARGV[6]) end
end
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2]) end
if KEYS[4] then redis.call('EXPIRE', KEYS[4], ARGV[2]) end
return 1
"""

# End a login: its pointer, its room list, the session the request knew and
# the one the pointer names now (a regenerate may have moved it meanwhile).
# KEYS: session, pointer, rooms. ARGV: the session key prefix.
_DESTROY_LUA = """
local current = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if current then redis.call('DEL', ARGV[1] .. current) end
return 1
"""

SessionData = dict[str, Any]


def as_text(value: Any) -> str:
    """A Redis reply as text ('' for none)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


class SessionStore:
    """get / save / regenerate / destroy of sessions kept in Redis."""

    def __init__(
        self,
        topology: Topology,
        prefix: str = "",
        idle_ttl: int = DEFAULT_IDLE_TTL_SECONDS,
        max_logins_per_user: int = DEFAULT_MAX_LOGINS_PER_USER,
    ) -> None:
        redis = self.redis = topology.client
        self.topology = topology
        # Keys of different slots cannot meet in one script: move them in steps.
        self._in_steps = topology.sharded
        self.prefix = prefix
        self.idle_ttl = idle_ttl
        self.max_logins_per_user = max_logins_per_user
        self._regenerate = redis.register_script(_REGENERATE_LUA)
        self._destroy = redis.register_script(_DESTROY_LUA)

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

    async def regenerate(
        self, old_id: str | None, data: SessionData, continues: bool = False
    ) -> str | None:
        """Store `data` under a fresh id and delete `old_id`, atomically.

        `continues`: the data's login is the one `old_id` belongs to, so the
        move happens only while the login still points at `old_id`; None when
        it does not (logged out, or another tab moved it first).
        """
        new_id = new_session_id()
        old_key = self.key(old_id) if old_id else self.key(new_id)
        keys = [old_key, self.key(new_id)]
        login_id = data.get("login")
        expected = ""
        if isinstance(login_id, str):
            keys += [self.login_key(login_id), self.rooms_key(login_id),
                     self.moved_key(old_id or new_id)]
            expected = (old_id or "") if continues else ""
        packed = msgpack.packb(data)
        if self._in_steps:
            moved = await self._regenerate_in_steps(keys, packed, new_id, expected)
            if moved and isinstance(login_id, str) and old_id:
                await self.redis.set(keys[4], login_id, ex=MOVED_MEMORY_SECONDS)
        else:
            moved = bool(await self._regenerate(
                keys=keys, args=[packed, self.idle_ttl, new_id, expected,
                                 login_id if isinstance(login_id, str) else "",
                                 MOVED_MEMORY_SECONDS]))
        return new_id if moved else None

    def moved_key(self, session_id: str) -> str:
        return f"{self.prefix}moved:{session_id}"

    async def login_of_replaced(self, session_id: str) -> str | None:
        """The login a recently replaced session id belonged to, if any."""
        return as_text(await self.redis.get(self.moved_key(session_id))) or None

    async def _regenerate_in_steps(
        self, keys: list[str], packed: bytes, new_id: str, expected: str
    ) -> bool:
        """On a Cluster the keys live on different shards, so no one script can
        move them. The order keeps the guarantees that matter: the new id
        exists before the old one goes, so no request ever sees neither; and
        the pointer moves only if it still exists (SET XX), after the logout's
        GETDEL of it or before, so a logout is never undone."""
        old_key, new_key, *login_keys = keys
        login_keys = login_keys[:2]
        if expected and login_keys:
            if as_text(await self.redis.get(login_keys[0])) != expected:
                return False
        await self.redis.set(new_key, packed, ex=self.idle_ttl)
        if login_keys:
            pointer, rooms = login_keys
            if expected:
                if not await self.redis.set(pointer, new_id, ex=self.idle_ttl, xx=True):
                    await self.redis.delete(new_key)
                    return False
            else:
                await self.redis.set(pointer, new_id, ex=self.idle_ttl)
            await self.redis.expire(rooms, self.idle_ttl)
        if old_key != new_key:
            await self.redis.delete(old_key)
        return True

    async def destroy(
        self, session_id: str, login_id: str | None = None, user: str | None = None
    ) -> None:
        """End the session; with its login, every id that login has now too
        (and, given the user, its place among the user's logins)."""
        if not login_id:
            await self.redis.delete(self.key(session_id))
            return
        if user:
            await self.redis.zrem(self.user_logins_key(user), login_id)
        keys = [self.key(session_id), self.login_key(login_id), self.rooms_key(login_id)]
        if self._in_steps:
            current = as_text(await self.redis.getdel(keys[1]))
            doomed = [keys[0], keys[2]] + ([self.key(current)] if current else [])
            await self.redis.delete(*doomed)  # a Cluster client splits it by slot
        else:
            await self._destroy(keys=keys, args=[self.key("")])

    def user_logins_key(self, user: str) -> str:
        return f"{self.prefix}user-logins:{{{user}}}"

    async def add_login(self, user: str, login_id: str) -> list[str]:
        """Count a new login of `user`; the logins it pushed past the cap (oldest
        first), which the caller ends. Stale entries (logins that expired) are
        the oldest, so they go first."""
        key = self.user_logins_key(user)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {login_id: time.time()})
            pipe.expire(key, self.idle_ttl)
            pipe.zcard(key)
            _, _, count = await pipe.execute()
        excess = int(count) - self.max_logins_per_user
        if excess <= 0:
            return []
        popped: Any = await self.redis.zpopmin(key, excess)
        return [as_text(member) for member, _ in popped]

    async def logins_of(self, user: str) -> list[str]:
        """Every login of `user` on record (some may have expired meanwhile)."""
        return [as_text(m) for m in await self.redis.zrange(self.user_logins_key(user), 0, -1)]

    async def end_login(self, user: str | None, login_id: str) -> None:
        """Forget a login that was pushed out: its current session, pointer and rooms."""
        current = as_text(await self.redis.get(self.login_key(login_id)))
        await self.destroy(current or new_session_id(), login_id, user)

    async def login_state(self, login_id: str) -> tuple[bool, list[str]]:
        """Whether the login still exists, and its rooms (one round trip)."""
        if not login_id:
            return True, []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.login_key(login_id))
            pipe.smembers(self.rooms_key(login_id))
            exists, members = await pipe.execute()
        return bool(exists), sorted(as_text(m) for m in members)

    def rooms_key(self, login_id: str) -> str:
        return f"{self.prefix}login:{login_id}:rooms"

    async def rooms(self, login_id: str) -> list[str]:
        """The rooms this login had joined, so a refresh or reconnect brings them back."""
        members = await self.redis.smembers(self.rooms_key(login_id))
        return sorted(as_text(m) for m in members)

    async def add_room(self, login_id: str, room: str) -> None:
        key = self.rooms_key(login_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(key, room)
            pipe.expire(key, self.idle_ttl)
            await pipe.execute()

    async def remove_room(self, login_id: str, room: str) -> None:
        await self.redis.srem(self.rooms_key(login_id), room)

    async def login_alive(self, login_id: str) -> bool:
        """Whether the login's current session still exists."""
        return (await self.logins_alive({login_id: False}))[login_id]

    async def logins_alive(self, touches: dict[str, bool]) -> dict[str, bool]:
        """`login_alive` for many logins at once: {login: touch} -> {login: alive}.

        Three pipelined round trips for the whole batch instead of two or more
        per login (the periodic check of 10,000 idle sockets' logins was most
        of their CPU). Single-key commands only, so it stays valid when
        sessions spread over a Redis Cluster.
        """
        logins = list(touches)
        pipelined = self.topology.pipelined
        session_ids = await pipelined([("GET", self.login_key(login)) for login in logins])
        alive = dict.fromkeys(logins, False)
        current = {login_id: (sid.decode() if isinstance(sid, bytes) else sid)
                   for login_id, sid in zip(logins, session_ids, strict=True) if sid is not None}
        if not current:
            return alive
        found = await pipelined([
            ("GETEX", self.key(session_id), "EX", self.idle_ttl) if touches[login_id]
            else ("EXISTS", self.key(session_id))
            for login_id, session_id in current.items()])
        for login_id, answer in zip(current, found, strict=True):
            alive[login_id] = bool(answer) if not touches[login_id] else answer is not None
        touched = [login_id for login_id in current if touches[login_id] and alive[login_id]]
        if touched:
            await pipelined([("EXPIRE", key, self.idle_ttl) for login_id in touched
                             for key in (self.login_key(login_id), self.rooms_key(login_id))])
        return alive
