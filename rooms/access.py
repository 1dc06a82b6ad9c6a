"""Who may read and write a room: the one rule, and a user's standing in a room.

A room's roles, bans and mutes live in its meta hash, `chat:{R}:meta`, next to
its stream and in its hash slot (so a Cluster keeps them on one shard):

    owner      the owner's name (public rooms: the first joiner; lobby: none)
    private    "1" for a private room or a direct message
    dm         "1" for a direct message
    role:U     "moderator" or "member"
    ban:U      "1" while U is banned
    mute:U     until when U is muted (ms, Redis clock)

The rule is written once, in Lua (`ACCESS_LUA`), and run inside every script
that reads or writes a room's content: the join's (with or without `after`),
the history page's, and the publish script (so a chat costs no extra round
trip). Admins (`CHAT_ADMINS`) pass as owners of every room.
"""

from __future__ import annotations

from dataclasses import dataclass

# room_access(meta, user, admin, now): 0 may read and write, 1 forbidden
# (banned, or not a member of a private room), 2 may read but is muted.
ACCESS_LUA = """
local function room_access(meta, user, admin, now)
  if admin == '1' then return 0 end
  local f = redis.call('HMGET', meta, 'private', 'ban:' .. user, 'role:' .. user, 'owner',
                       'mute:' .. user)
  if f[2] then return 1 end
  if f[1] == '1' and not f[3] and f[4] ~= user then return 1 end
  if f[5] and tonumber(f[5]) > now then return 2 end
  return 0
end
"""

ALLOWED, FORBIDDEN, MUTED = 0, 1, 2

ROLES = ("moderator", "member")

# Who outranks whom: a user may moderate only those ranked below them.
RANK = {"admin": 3, "owner": 2, "moderator": 1, "member": 0, None: 0}


@dataclass(frozen=True)
class Standing:
    """A user's place in a room, read in one HMGET (`RoomAccess.standing`)."""

    exists: bool
    private: bool
    dm: bool
    owner: str | None
    role: str | None          # "admin", "owner", "moderator", "member" or None
    banned: bool
    muted_until_ms: int

    @property
    def may_moderate(self) -> bool:
        return RANK[self.role] >= RANK["moderator"]

    def outranks(self, other: Standing) -> bool:
        return RANK[self.role] > RANK[other.role]


def standing_of(fields: list[object], user: str, admin: bool, exists: bool) -> Standing:
    """Build a Standing from HMGET private, dm, owner, role:U, ban:U, mute:U."""
    private, dm, owner, role, banned, mute = (
        (v.decode() if isinstance(v, bytes) else v if isinstance(v, str) else None)
        for v in fields)
    if admin:
        role = "admin"
    elif owner is not None and owner == user:
        role = "owner"
    return Standing(exists=exists, private=private == "1", dm=dm == "1",
                    owner=owner if isinstance(owner, str) else None,
                    role=role if isinstance(role, str) else None,
                    banned=banned is not None, muted_until_ms=int(mute or 0))
