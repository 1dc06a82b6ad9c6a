"""The hand-written session store against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from redisconn import topology_of
from sessions import SessionStore
from tests.conftest import unique


@pytest.fixture
def redis(redis_client: Redis) -> Redis:
    return redis_client


@pytest.fixture
def store(redis: Redis) -> SessionStore:
    return SessionStore(topology_of(redis), prefix=unique("t") + ":", idle_ttl=100)


async def test_create_and_read(store: SessionStore) -> None:
    sid = await store.regenerate(None, {"user": "ann"})
    assert len(sid) >= 43  # 256 bits, URL-safe base64
    assert await store.get(sid) == {"user": "ann"}
    assert await store.get(sid + "x") is None


async def test_ids_are_distinct(store: SessionStore) -> None:
    ids = {await store.regenerate(None, {}) for _ in range(200)}
    assert len(ids) == 200


async def test_expiry_slides_on_read(store: SessionStore, redis: Redis) -> None:
    sid = await store.regenerate(None, {"user": "ann"})
    await redis.expire(store.key(sid), 5)
    assert await redis.ttl(store.key(sid)) <= 5
    await store.get(sid)
    assert await redis.ttl(store.key(sid)) > 90


async def test_idle_session_expires(redis: Redis) -> None:
    """Left alone for its idle TTL, a session is gone (polled without touching it)."""
    short = SessionStore(topology_of(redis), prefix=unique("t") + ":", idle_ttl=1)
    sid = await short.regenerate(None, {"user": "ann"})
    assert 0 < await redis.pttl(short.key(sid)) <= 1000
    for _ in range(100):
        if not await redis.exists(short.key(sid)):
            break
        await asyncio.sleep(0.05)
    assert await short.get(sid) is None


async def test_regenerate_moves_data_and_kills_old_id(store: SessionStore, redis: Redis) -> None:
    old = await store.regenerate(None, {"user": "ann", "login": "L"})
    new = await store.regenerate(old, {"user": "ann", "login": "L"})
    assert new != old
    assert await store.get(old) is None
    assert await store.get(new) == {"user": "ann", "login": "L"}
    assert await redis.exists(store.key(old)) == 0


async def test_regenerate_is_atomic_under_concurrency(store: SessionStore, redis: Redis) -> None:
    """Many regenerations racing from one id: exactly the new ids exist, never the old."""
    old = await store.regenerate(None, {"user": "ann"})
    news = await asyncio.gather(*(store.regenerate(old, {"user": "ann"}) for _ in range(20)))
    assert await store.get(old) is None
    for sid in news:
        assert await store.get(sid) == {"user": "ann"}


async def test_store_and_destroy(store: SessionStore) -> None:
    first = await store.regenerate(None, {"user": "ann"})
    sid = await store.regenerate(first, {"user": "ann", "rooms": ["lobby"]})
    assert await store.get(sid) == {"user": "ann", "rooms": ["lobby"]}
    await store.destroy(sid)
    assert await store.get(sid) is None


async def test_login_follows_regenerations_until_destroyed(store: SessionStore) -> None:
    first = await store.regenerate(None, {"user": "ann", "login": "L1"})
    assert await store.login_alive("L1")
    second = await store.regenerate(first, {"user": "ann", "login": "L1"})
    assert await store.login_alive("L1")
    await store.destroy(second, "L1")
    assert not await store.login_alive("L1")
    assert not await store.login_alive("never-issued")


async def test_many_logins_checked_in_one_batch(store: SessionStore, redis: Redis) -> None:
    sids = {name: await store.regenerate(None, {"user": name.lower(), "login": name})
            for name in ("A", "B", "C", "D")}
    await store.destroy(sids["D"], "D")
    for name in ("A", "B"):
        await redis.expire(store.key(sids[name]), 5)
        await redis.expire(store.login_key(name), 5)
    alive = await store.logins_alive({"A": True, "B": False, "C": False, "D": True, "E": True})
    assert alive == {"A": True, "B": True, "C": True, "D": False, "E": False}
    # Touched: the session and its login pointer slide back to the idle TTL (100 s).
    assert await redis.ttl(store.key(sids["A"])) > 5
    assert await redis.ttl(store.login_key("A")) > 5
    # Only asked: untouched.
    assert 0 < await redis.ttl(store.key(sids["B"])) <= 5
