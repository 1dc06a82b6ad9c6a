"""What the signup, login and password handlers ask of accounts, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.passwords import Busy, KdfParams, Passwords
from accounts.store import Account, AccountStore
from accounts.throttle import SIGNUPS_PER_ADDRESS_HOUR, LoginThrottle
from redisconn import Topology


class Refused(Exception):
    """A signup or password change refused with a reason for the user (400 or 409)."""

    def __init__(self, status: int, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.field = field  # the form field at fault ("name", "password"), if one is


NAME_TAKEN = "That name is taken. Pick another, or log in if it is yours."


@dataclass
class Accounts:
    store: AccountStore
    throttle: LoginThrottle
    passwords: Passwords

    @classmethod
    def open(cls, topology: Topology, prefix: str, params: KdfParams, threads: int,
             signups_per_hour: int = SIGNUPS_PER_ADDRESS_HOUR) -> Accounts:
        return cls(AccountStore(topology, prefix),
                   LoginThrottle(topology, prefix, signups_per_hour=signups_per_hour),
                   Passwords(params, threads))

    async def start(self) -> None:
        await self.passwords.start()

    def stop(self) -> None:
        self.passwords.stop()

    async def sign_up(self, name: str, password: str, address: str) -> Account:
        """The new account, or `Refused` (400: weak password; 409: name taken);
        `Throttled` past the address's signups this hour."""
        ticket = await self.throttle.signup(address)
        try:
            return await self._create(name, password)
        except (Refused, Busy):
            await self.throttle.signup_refused(address, ticket)
            raise

    async def _create(self, name: str, password: str) -> Account:
        if await self.store.exists(name):  # spare the KDF; create() decides races
            raise Refused(409, NAME_TAKEN, "name")
        problem = await self.passwords.problem(password, name)
        if problem:
            raise Refused(400, problem, "password")
        password_hash = await self.passwords.hash(password)
        if not await self.store.create(name, password_hash):
            raise Refused(409, NAME_TAKEN, "name")
        return Account(name, password_hash)

    async def check(self, name: str, password: str, address: str) -> Account | None:
        """The account if `password` is its password, else None (a failure on
        record); `Throttled` past the limits, even for the right password."""
        attempt = await self.throttle.attempt(name, address)
        try:
            account = await self.store.get(name)
            matched = await self.passwords.verify(
                account.password_hash if account else None, password)
        except Busy:
            await self.throttle.not_counted(attempt)
            raise
        if not matched or account is None:
            return None
        await self.throttle.succeeded(attempt)
        if self.passwords.needs_rehash(account.password_hash):
            upgraded = await self.passwords.hash(password)
            await self.store.replace_hash(account.name, account.password_hash, upgraded)
        return account

    async def change_password(self, account: Account, new: str) -> None:
        """Store `new` for an account whose old password was just checked."""
        problem = await self.passwords.problem(new, account.name)
        if problem:
            raise Refused(400, problem, "new")
        new_hash = await self.passwords.hash(new)
        if not await self.store.replace_hash(account.name, account.password_hash, new_hash):
            raise Refused(409, "The password was changed meanwhile. Please try again.")
