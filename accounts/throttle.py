"""The login throttle (docs/protocol.md: Accounts), shared by every instance
through Redis: 5 failures for one name from one address in 15 minutes, or 50
from one address over all names; past either, every attempt is refused until
the oldest failure on record is 15 minutes old.

Each attempt is written down as a failure *before* the password is checked
and struck off if it was right, so attempts racing on many instances can
never get more than the limit of guesses between them.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from redisconn import Topology

WINDOW_SECONDS = 15 * 60
FAILURES_PER_NAME_AND_ADDRESS = 5
FAILURES_PER_ADDRESS = 50

# Accounts never expire, so new ones are capped per client address: an office
# behind one NAT address signs up a team in an hour, a script cannot fill Redis.
SIGNUPS_PER_ADDRESS_HOUR = 20
SIGNUP_WINDOW_SECONDS = 3600

# A sorted set of attempts (member: a random ticket, score: when). Returns 0
# and records the attempt, or the seconds until the oldest one leaves the
# window, recording nothing. Redis's clock: every instance agrees.
_ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, math.ceil(tonumber(oldest[2]) + window - now))
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('EXPIRE', KEYS[1], window)
return 0
"""


class Throttled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Attempt:
    """One login attempt on record as a failure until `LoginThrottle.succeeded`."""

    keys: tuple[str, str]
    ticket: str


class LoginThrottle:
    def __init__(self, topology: Topology, prefix: str = "",
                 per_name: int = FAILURES_PER_NAME_AND_ADDRESS,
                 per_address: int = FAILURES_PER_ADDRESS,
                 window: int = WINDOW_SECONDS,
                 signups_per_hour: int = SIGNUPS_PER_ADDRESS_HOUR) -> None:
        self.redis = topology.client
        self.prefix = prefix
        self.per_name = per_name
        self.per_address = per_address
        self.window = window
        self.signups_per_hour = signups_per_hour
        self._admit = self.redis.register_script(_ADMIT_LUA)

    def address_key(self, address: str) -> str:
        return f"{self.prefix}login-failures:{{{address}}}"

    def name_key(self, name: str, address: str) -> str:
        return f"{self.prefix}login-failures:{{{name.lower()}}}:{address}"

    async def attempt(self, name: str, address: str) -> Attempt:
        """Write the attempt down, or raise `Throttled` (nothing written)."""
        ticket = secrets.token_hex(8)
        by_address, by_name = self.address_key(address), self.name_key(name, address)
        wait = int(await self._admit(keys=[by_address],
                                     args=[self.window, self.per_address, ticket]))
        if wait:
            raise Throttled(wait)
        wait = int(await self._admit(keys=[by_name], args=[self.window, self.per_name, ticket]))
        if wait:
            await self.redis.zrem(by_address, ticket)
            raise Throttled(wait)
        return Attempt((by_address, by_name), ticket)

    def signup_key(self, address: str) -> str:
        return f"{self.prefix}signups:{{{address}}}"

    async def signup(self, address: str) -> str | None:
        """Write a signup from `address` down (its ticket), or raise `Throttled`;
        None when signups are not counted (`signups_per_hour` 0)."""
        if not self.signups_per_hour:
            return None
        ticket = secrets.token_hex(8)
        wait = int(await self._admit(keys=[self.signup_key(address)],
                                     args=[SIGNUP_WINDOW_SECONDS, self.signups_per_hour, ticket]))
        if wait:
            raise Throttled(wait)
        return ticket

    async def signup_refused(self, address: str, ticket: str | None) -> None:
        """No account was made (name taken, weak password): it does not count."""
        if ticket:
            await self.redis.zrem(self.signup_key(address), ticket)

    async def succeeded(self, attempt: Attempt) -> None:
        """The password was right: strike the attempt off, and the name's earlier
        failures from that address with it (the address keeps its count)."""
        by_address, by_name = attempt.keys
        await self.redis.zrem(by_address, attempt.ticket)
        await self.redis.delete(by_name)

    async def not_counted(self, attempt: Attempt) -> None:
        """The attempt never got to check a password (the server was busy)."""
        by_address, by_name = attempt.keys
        await self.redis.zrem(by_address, attempt.ticket)
        await self.redis.zrem(by_name, attempt.ticket)


def minutes(seconds: int) -> int:
    return max(1, math.ceil(seconds / 60))
