"""The room frames beyond join and chat: create, invite, role, kick, ban, unban,
mute, dm and audit (docs/protocol.md: Rooms, roles and moderation).

Each action checks the sender's standing (`access.Standing`), writes the room's
meta hash and audit trail in one MULTI on the room's slot, and tells every
instance over the bus's control channel (a kick cuts sockets off the room
everywhere; an invite reaches the invitee's sockets), as logout does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pubsub import Keys, Refused
from pubsub.codec import as_str
from pubsub.publish import new_epoch
from pubsub.scripts import NOW_LUA
from redisconn import Topology
from rooms.access import ACCESS_LUA, FORBIDDEN, RANK, ROLES, Standing, standing_of
from rooms.names import dm_room, dm_users

log = logging.getLogger(__name__)

# The longest mute: a month. Longer is a ban.
MAX_MUTE_SECONDS = 30 * 24 * 3600
# Roles, bans and mutes one room may hold (fields of its meta hash): a private
# room of a thousand members fits; an invitation loop cannot grow it without end.
MAX_ROOM_FIELDS = 4096
# Audit entries kept per room (trimmed approximately), and shown per request.
AUDIT_KEEP = 1000
AUDIT_PAGE = 100

# The room's rule alone (rooms/access.py). KEYS: meta. ARGV: user, '1' for an
# admin. Returns the rule's verdict (FORBIDDEN: may not read).
_MAY_READ_LUA = NOW_LUA + ACCESS_LUA + """
return room_access(KEYS[1], ARGV[1], ARGV[2], now)
"""

# Create a room if neither its meta nor its stream exists. KEYS: meta, stream.
# ARGV: owner, private ('1' or '0'), idle seconds, epoch. 1: created, 0: exists.
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'created_by', ARGV[1], 'epoch', ARGV[4])
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'private', '1') end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# Make the DM room of two users (idempotent). KEYS: meta. ARGV: the two users,
# idle seconds, an epoch for a new one. 1: made now, 0: it existed.
_DM_LUA = """
local made = redis.call('HSETNX', KEYS[1], 'dm', '1')
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[4])
redis.call('HSET', KEYS[1], 'private', '1', 'role:' .. ARGV[1], 'member',
           'role:' .. ARGV[2], 'member')
redis.call('EXPIRE', KEYS[1], ARGV[3])
return made
"""

# Mute until Redis's now + ARGV[2] seconds (0 lifts it). KEYS: meta. ARGV: user, seconds.
_MUTE_LUA = """
if tonumber(ARGV[2]) == 0 then redis.call('HDEL', KEYS[1], 'mute:' .. ARGV[1]) return 0 end
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ARGV[2] * 1000
redis.call('HSET', KEYS[1], 'mute:' .. ARGV[1], until_ms)
return until_ms
"""


@dataclass(frozen=True)
class RoomSettings:
    admins: frozenset[str] = frozenset()
    idle_seconds: int = 365 * 24 * 3600


def forbidden(reason: str) -> Refused:
    return Refused("forbidden", reason)


class Rooms:
    """The room frames, for one process. `publish_control` sends an order to
    every instance; `user_exists` says whether a name is a user (an account in
    accounts mode, any valid name in open mode); `count_new_room` spends one
    of the user's new rooms for today (Refused past it); `forget_room(user,
    room)` takes the room out of every login's list of rooms to rejoin."""

    def __init__(self, topology: Topology, keys: Keys, settings: RoomSettings,
                 publish_control: Callable[[dict[str, object]], Awaitable[None]],
                 user_exists: Callable[[str], Awaitable[bool]],
                 count_new_room: Callable[[str], Awaitable[None]],
                 forget_room: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        self.redis = topology.client
        self.keys = keys
        self.settings = settings
        self.publish_control = publish_control
        self.user_exists = user_exists
        self.count_new_room = count_new_room
        self.forget_room = forget_room
        self._create = self.redis.register_script(_CREATE_LUA)
        self._dm = self.redis.register_script(_DM_LUA)
        self._mute = self.redis.register_script(_MUTE_LUA)
        self._may_read = self.redis.register_script(_MAY_READ_LUA)

    def is_admin(self, user: str) -> bool:
        return user in self.settings.admins

    async def standings(self, room: str, *users: str) -> list[Standing]:
        """Each user's standing in `room`, in one round trip."""
        meta = self.keys.room_meta(room)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(meta, self.keys.stream(room))
            for user in users:
                pipe.hmget(meta, ["private", "dm", "owner", f"role:{user}", f"ban:{user}",
                                  f"mute:{user}"])
            exists, *found = await pipe.execute()
        return [standing_of(fields, user, self.is_admin(user), bool(exists))
                for user, fields in zip(users, found, strict=True)]

    async def check_read(self, room: str, user: str) -> None:
        """Refused(forbidden) unless `user` may read `room` now (history pages):
        the room's one rule (rooms/access.py), as the join and publish scripts ask it."""
        verdict = await self._may_read(keys=[self.keys.room_meta(room)],
                                       args=[user, "1" if self.is_admin(user) else "0"])
        if int(verdict) == FORBIDDEN:
            raise forbidden("you may not read this room")

    async def rooms_of_user(self, user: str) -> list[str]:
        """The private rooms and DMs `user` belongs to (hello.rooms)."""
        return sorted(as_str(m) for m in await self.redis.smembers(self.keys.user_rooms(user)))

    # -- frames ------------------------------------------------------------

    async def create(self, user: str, room: str, private: bool) -> None:
        """A new room owned by `user`; Refused(room_exists) if the name is in use."""
        k = self.keys
        if await self.redis.exists(k.room_meta(room), k.stream(room)):
            raise Refused("room_exists", "a room of that name exists; join it")
        await self.count_new_room(user)
        made = await self._create(keys=[k.room_meta(room), k.stream(room)],
                                  args=[user, "1" if private else "0",
                                        self.settings.idle_seconds, new_epoch()])
        if not int(made):
            raise Refused("room_exists", "a room of that name exists; join it")
        if private:
            await self._add_user_room(user, room)
        await self.record(room, user, "create", user, private="1" if private else "0")

    async def invite(self, user: str, room: str, invitee: str) -> None:
        await self._known(invitee)
        actor, target = await self._both(room, user, invitee)
        if not actor.private:
            raise Refused("bad_room", "only a private room has invitations; it is open to all")
        if actor.dm:
            raise forbidden("nobody can be invited to a direct message")
        if not actor.may_moderate:
            raise forbidden("only the owner and moderators may invite")
        if target.banned:
            raise forbidden(f"{invitee} is banned from this room; unban first")
        await self.redis.hsetnx(self.keys.room_meta(room), f"role:{invitee}", "member")
        await self._add_user_room(invitee, room)
        await self.record(room, user, "invite", invitee)
        await self.publish_control({"t": "invited", "room": room, "user": invitee, "by": user})

    async def set_role(self, user: str, room: str, target_user: str, role: str) -> None:
        if role not in ROLES:
            raise Refused("bad_frame", "'role' must be 'moderator' or 'member'")
        await self._known(target_user)
        actor, target = await self._both(room, user, target_user)
        if actor.dm:
            raise forbidden("a direct message has no roles")
        if RANK[actor.role] < RANK["owner"]:
            raise forbidden("only the owner sets roles")
        if not actor.outranks(target):
            raise forbidden(f"you may not change {target_user}'s role")
        meta = self.keys.room_meta(room)
        if role == "member" and not actor.private:
            await self.redis.hdel(meta, f"role:{target_user}")  # a public room's plain member
        else:
            await self.redis.hset(meta, f"role:{target_user}", role)
            if actor.private:
                await self._add_user_room(target_user, room)
        await self.record(room, user, "role", target_user, role=role)

    async def kick(self, user: str, room: str, target_user: str, *, ban: bool = False) -> None:
        """Cut `target_user` off the room on every instance; with `ban`, until unbanned."""
        await self._known(target_user)
        actor, target = await self._moderated(room, user, target_user, grows=ban)
        meta = self.keys.room_meta(room)
        async with self.redis.pipeline(transaction=True) as pipe:
            if ban:
                pipe.hset(meta, f"ban:{target_user}", "1")
            if actor.private or ban:
                pipe.hdel(meta, f"role:{target_user}")
            await pipe.execute()
        if actor.private:
            await self.redis.srem(self.keys.user_rooms(target_user), room)
        if (actor.private or ban) and self.forget_room is not None:
            # Out of every login's room list too, connected or not, so no
            # later hello offers the room again.
            await self.forget_room(target_user, room)
        await self.record(room, user, "ban" if ban else "kick", target_user)
        await self.publish_control({"t": "kick", "room": room, "user": target_user, "by": user,
                                    "ban": ban})

    async def unban(self, user: str, room: str, target_user: str) -> None:
        await self._known(target_user)
        await self._moderated(room, user, target_user, grows=False)
        await self.redis.hdel(self.keys.room_meta(room), f"ban:{target_user}")
        await self.record(room, user, "unban", target_user)

    async def mute(self, user: str, room: str, target_user: str, seconds: int) -> None:
        if not 0 <= seconds <= MAX_MUTE_SECONDS:
            raise Refused("bad_frame", f"'seconds' must be 0 to {MAX_MUTE_SECONDS} "
                                       "(0 lifts a mute; longer is a ban)")
        await self._known(target_user)
        await self._moderated(room, user, target_user)
        await self._mute(keys=[self.keys.room_meta(room)], args=[target_user, seconds])
        await self.record(room, user, "mute", target_user, seconds=str(seconds))

    async def dm(self, user: str, other: str) -> str:
        """The DM room of `user` and `other`, made on first use."""
        if other == user:
            raise Refused("bad_frame", "a direct message needs another user")
        await self._known(other)
        room = dm_room(user, other)
        meta = self.keys.room_meta(room)
        if not await self.redis.hexists(meta, "dm"):
            await self.count_new_room(user)
        made = await self._dm(keys=[meta],
                              args=[user, other, self.settings.idle_seconds, new_epoch()])
        await self._add_user_room(user, room)
        await self._add_user_room(other, room)
        if int(made):
            await self.publish_control({"t": "invited", "room": room, "user": other, "by": user})
        return room

    async def audit(self, user: str, room: str) -> list[dict[str, str]]:
        """The room's moderation trail, oldest first (owner, moderators, admins)."""
        (actor,) = await self.standings(room, user)
        if not actor.exists:
            raise Refused("bad_room", "no such room")
        if not actor.may_moderate:
            raise forbidden("only the owner and moderators may read the audit trail")
        rows: Any = await self.redis.xrevrange(self.keys.audit(room), count=AUDIT_PAGE)
        return [{as_str(k): as_str(v) for k, v in fields.items()} | {"id": as_str(entry_id)}
                for entry_id, fields in reversed(rows)]

    # -- helpers -----------------------------------------------------------

    async def _known(self, user: str) -> None:
        if not await self.user_exists(user):
            raise Refused("unknown_user", "there is no such user")

    async def _both(self, room: str, user: str, target: str,
                    grows: bool = True) -> tuple[Standing, Standing]:
        """Both standings; `grows`: the action may add a field to the room's meta."""
        actor, other = await self.standings(room, user, target)
        if not actor.exists:
            raise Refused("bad_room", "no such room")
        if grows and await self.redis.hlen(self.keys.room_meta(room)) >= MAX_ROOM_FIELDS:
            raise forbidden("this room holds as many members, bans and mutes as it may")
        return actor, other

    async def _moderated(self, room: str, user: str, target_user: str,
                         grows: bool = True) -> tuple[Standing, Standing]:
        """Both standings, once `user` may moderate `target_user` in `room`."""
        actor, target = await self._both(room, user, target_user, grows)
        if target_user == user:
            raise Refused("bad_frame", "you cannot do that to yourself")
        if not actor.may_moderate:
            raise forbidden("only the owner and moderators may do that")
        if not actor.outranks(target):
            raise forbidden(f"you may not do that to {target_user}")
        return actor, target

    async def _add_user_room(self, user: str, room: str) -> None:
        key = self.keys.user_rooms(user)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(key, room)
            pipe.expire(key, self.settings.idle_seconds)
            await pipe.execute()

    async def record(self, room: str, by: str, action: str, target: str,
                     **extra: str) -> None:
        """One line of the room's trail and of the process log (never a message text);
        also for actions taken elsewhere (a moderator's delete)."""
        key = self.keys.audit(room)
        fields: dict[Any, Any] = {"by": by, "action": action, "user": target,
                                  "ts": str(int(time.time())), **extra}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, fields, maxlen=AUDIT_KEEP, approximate=True)
            pipe.expire(key, self.settings.idle_seconds)
            await pipe.execute()
        log.info("moderation: room=%s by=%s action=%s user=%s%s", room, by, action, target,
                 "".join(f" {k}={v}" for k, v in extra.items()))


__all__ = ["Rooms", "RoomSettings", "dm_users"]
