"""The account store, the login throttle and the password work, on a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from argon2 import PasswordHasher
from redis.asyncio import Redis

from accounts import AccountStore, Busy, KdfParams, LoginThrottle, Passwords, Throttled
from accounts.passwords import KDF_RUNS, password_problem
from redisconn import topology_of
from tests.conftest import unique

# Cheap parameters: these tests count runs, they do not need a slow hash.
FAST = KdfParams(time_cost=1, memory_kib=8 * 1024)


@pytest.fixture
def redis(redis_client: Redis) -> Redis:
    return redis_client


@pytest.fixture
async def passwords() -> AsyncIterator[Passwords]:
    work = Passwords(FAST)
    await work.start()
    yield work
    work.stop()


async def test_one_of_many_racing_creates_wins(redis: Redis) -> None:
    store = AccountStore(topology_of(redis), unique("t") + ":")
    name = unique("Ann")
    won = await asyncio.gather(*(store.create(n, f"hash-{i}") for i, n in
                                 enumerate([name, name.lower(), name.upper()] * 4)))
    assert won.count(True) == 1
    account = await store.get(name.lower())
    assert account is not None and account.name == [name, name.lower(), name.upper()][
        won.index(True) % 3]


async def test_replace_hash_only_over_the_hash_checked(redis: Redis) -> None:
    store = AccountStore(topology_of(redis), unique("t") + ":")
    name = unique("bo")
    await store.create(name, "h1")
    assert not await store.replace_hash(name, "stale", "h2")
    assert await store.replace_hash(name, "h1", "h2")
    account = await store.get(name)
    assert account is not None and account.password_hash == "h2"
    assert await redis.ttl(store.key(name)) == -1  # accounts never expire


async def test_throttle_limits_and_forgets_after_the_window(redis: Redis) -> None:
    throttle = LoginThrottle(topology_of(redis), unique("t") + ":", per_name=3,
                             per_address=5, window=2)
    for _ in range(3):
        await throttle.attempt("cy", "10.0.0.1")
    with pytest.raises(Throttled) as refused:
        await throttle.attempt("CY", "10.0.0.1")  # names count in any case
    assert 1 <= refused.value.retry_after <= 2
    # A refused attempt is not written down: the address still has 3.
    assert await redis.zcard(throttle.address_key("10.0.0.1")) == 3
    await throttle.attempt("cy", "10.0.0.2")  # another address is free
    deadline = time.monotonic() + 20
    while True:  # the window passes (Redis's clock)
        try:
            await throttle.attempt("cy", "10.0.0.1")
            break
        except Throttled:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    assert 0 < await redis.ttl(throttle.name_key("cy", "10.0.0.1")) <= 2


async def test_a_success_strikes_the_names_failures_off(redis: Redis) -> None:
    throttle = LoginThrottle(topology_of(redis), unique("t") + ":", per_name=3, per_address=50)
    for _ in range(2):
        await throttle.attempt("di", "10.0.0.3")
    await throttle.succeeded(await throttle.attempt("di", "10.0.0.3"))
    for _ in range(3):
        await throttle.attempt("di", "10.0.0.3")
    with pytest.raises(Throttled):
        await throttle.attempt("di", "10.0.0.3")
    assert await redis.zcard(throttle.address_key("10.0.0.3")) == 5  # 2 + 3 failures


async def test_address_limit_over_all_names(redis: Redis) -> None:
    throttle = LoginThrottle(topology_of(redis), unique("t") + ":", per_name=5, per_address=4)
    for n in range(4):
        await throttle.attempt(f"name{n}", "10.0.0.4")
    with pytest.raises(Throttled):
        await throttle.attempt("someone-else", "10.0.0.4")


async def test_an_unknown_account_costs_one_kdf_run_like_a_known_one(
    passwords: Passwords,
) -> None:
    stored = await passwords.hash("correct horse battery")
    before = KDF_RUNS.value
    assert await passwords.verify(stored, "correct horse battery")
    assert KDF_RUNS.value == before + 1
    assert not await passwords.verify(stored, "wrong")
    assert KDF_RUNS.value == before + 2
    assert not await passwords.verify(None, "correct horse battery")
    assert KDF_RUNS.value == before + 3


async def test_rehash_is_asked_for_older_parameters(passwords: Passwords) -> None:
    old = PasswordHasher(time_cost=1, memory_cost=4 * 1024, parallelism=1).hash("pw-abcdefgh")
    assert passwords.needs_rehash(old)
    assert not passwords.needs_rehash(await passwords.hash("pw-abcdefgh"))
    assert await passwords.verify(old, "pw-abcdefgh")  # still logs in until upgraded


async def test_the_same_password_typed_two_ways_is_one(passwords: Passwords) -> None:
    stored = await passwords.hash("ｐａｓｓ-word-ｏｔｔｅｒ")  # full-width letters
    assert await passwords.verify(stored, "pass-word-otter")


async def test_a_full_pool_refuses_rather_than_queue_without_end() -> None:
    work = Passwords(FAST, threads=1, max_waiting=2)
    try:
        results = await asyncio.gather(*(work.hash(f"pw-{n}-abcdefgh") for n in range(6)),
                                       return_exceptions=True)
        assert sum(isinstance(r, Busy) for r in results) == 4
        assert sum(isinstance(r, str) for r in results) == 2
        assert work.waiting == 0
    finally:
        work.stop()


@pytest.mark.parametrize("password", ["password", "password123", "iloveyou", "qwerty123",
                                      "Password1!", "aaaaaaaaaaaa", "12345678910"])
def test_well_known_passwords_are_refused_without_echo(password: str) -> None:
    problem = password_problem(password, "ann")
    assert problem and "well-known" in problem
    if password != "password":  # the one that is also a word of the reason
        assert password not in problem


def test_the_users_own_name_is_a_weak_password() -> None:
    assert password_problem("annabelle-1", "annabelle-1")


@pytest.mark.parametrize("password", ["sunny-otter-42", "correct horse battery staple",
                                      "Tr0ub4dor&3", "x7#kQ9!mW2zP"])
def test_good_passwords_pass(password: str) -> None:
    assert password_problem(password, "ann") is None


def test_length_rules() -> None:
    assert "at least 8" in (password_problem("a1!Zx", "ann") or "")
    assert "at most 128" in (password_problem("Zq9!" * 40, "ann") or "")
    # A long, strong passphrase is judged by its first characters, and passes.
    assert password_problem("Tr0ub4dor&3-" + "4@8({[<3619!|l1|70[)5$+7%2" * 4, "ann") is None
