"""Accounts in Redis: one hash per account, `account:{name}` (hash-tagged, so a
Cluster keeps it on one shard). Names are unique without regard to case, so
nobody can pass for "Alice" as "alice"; the name keeps the case it was signed up
with. Accounts never expire: they are what a user owns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redisconn import Topology
from sessions.store import as_text

# Create only if no account has the name: two signups at once, one wins.
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'hash', ARGV[2], 'created', ARGV[3])
return 1
"""

# Replace the hash only if it is still the one the caller checked: a rehash
# at login never undoes a password change that landed meanwhile.
_REPLACE_LUA = """
if redis.call('HGET', KEYS[1], 'hash') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'hash', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Account:
    name: str            # as signed up (the session's user)
    password_hash: str   # Argon2id, PHC string format


class AccountStore:
    def __init__(self, topology: Topology, prefix: str = "") -> None:
        self.redis = topology.client
        self.prefix = prefix
        self._create = self.redis.register_script(_CREATE_LUA)
        self._replace = self.redis.register_script(_REPLACE_LUA)

    def key(self, name: str) -> str:
        return f"{self.prefix}account:{{{name.lower()}}}"

    async def create(self, name: str, password_hash: str) -> bool:
        """False when the name (in any case) is taken."""
        return bool(await self._create(keys=[self.key(name)],
                                       args=[name, password_hash, int(time.time())]))

    async def get(self, name: str) -> Account | None:
        found = await self.redis.hmget(self.key(name), ["name", "hash"])
        stored_name, stored_hash = (as_text(value) for value in found)
        if not stored_name or not stored_hash:
            return None
        return Account(stored_name, stored_hash)

    async def replace_hash(self, name: str, old_hash: str, new_hash: str) -> bool:
        return bool(await self._replace(keys=[self.key(name)], args=[old_hash, new_hash]))

    async def exists(self, name: str) -> bool:
        return bool(await self.redis.exists(self.key(name)))
