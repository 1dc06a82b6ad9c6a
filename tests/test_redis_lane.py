"""The pipelined Redis connection of the publish path (internals/redis_lane.py), on a real Redis.

Calls made in one loop turn share one connection and one write, and each
gets its own reply; error replies come back as redis-py's exceptions; a
connection killed under the calls fails them and the next call reconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from internals.redis_lane import RedisLane
from pubsub import Keys, RateLimit
from pubsub.publish import Publisher
from redisconn import topology_of
from tests.conftest import unique


async def lane_clients(redis: Redis) -> list[int]:
    """Ids of the connections named as the lane's (CLIENT SETNAME below)."""
    listed = await redis.client_list()
    return [int(c["id"]) for c in listed if c.get("name") == "lane-test"]


async def test_calls_of_one_turn_share_a_connection_and_get_their_own_replies(
        redis_client: Redis) -> None:
    lane = RedisLane(redis_client, timeout=5.0)
    try:
        await lane.call("CLIENT", "SETNAME", "lane-test")
        key = unique("lane")
        replies = await asyncio.gather(*(lane.call("RPUSH", key, str(n)) for n in range(200)))
        # Each call got its own reply, in the order Redis ran them.
        assert sorted(replies) == list(range(1, 201))
        assert len(await lane_clients(redis_client)) == 1
        echoes = await asyncio.gather(*(lane.call("ECHO", f"m{n}") for n in range(50)))
        assert echoes == [f"m{n}".encode() for n in range(50)]
    finally:
        await lane.aclose()


async def test_error_replies_raise_redis_py_exceptions(redis_client: Redis) -> None:
    lane = RedisLane(redis_client, timeout=5.0)
    try:
        with pytest.raises(NoScriptError):
            await lane.call("EVALSHA", "0" * 40, 0)
        with pytest.raises(ResponseError):
            await lane.call("INCR", unique("text-key"), "too", "many")
        # The connection survives an error reply.
        assert await lane.call("PING") == b"PONG"
    finally:
        await lane.aclose()


async def test_many_commands_in_one_call_get_their_replies_in_order(redis_client: Redis) -> None:
    lane = RedisLane(redis_client, timeout=5.0)
    try:
        key = unique("many")
        await redis_client.set(key, "here")
        replies = await lane.call_many([("GET", key), ("EXISTS", key), ("INCR", key),
                                        ("GET", unique("absent")), ("ECHO", "last")])
        # An error reply stands in its command's place, and the rest still answer.
        assert replies[:2] == [b"here", 1]
        assert isinstance(replies[2], ResponseError)
        assert replies[3:] == [None, b"last"]
        assert await lane.call_many([]) == []
    finally:
        await lane.aclose()


async def test_a_call_on_a_killed_connection_is_retried_once_on_a_new_one(
        redis_client: Redis) -> None:
    lane = RedisLane(redis_client, timeout=5.0)
    try:
        await lane.call("CLIENT", "SETNAME", "lane-test")
        (first,) = await lane_clients(redis_client)
        key = unique("list")
        blocked = asyncio.ensure_future(lane.call("BLPOP", key, 30))
        await until_blocked(redis_client, lambda ids: first in ids)
        await redis_client.client_kill_filter(_id=first)
        # The call went again on a new connection: it is answered there.
        await until_blocked(redis_client, lambda ids: bool(ids) and first not in ids)
        await redis_client.rpush(key, "x")
        assert await asyncio.wait_for(blocked, 10) == [key.encode(), b"x"]
    finally:
        await lane.aclose()


async def test_a_second_loss_fails_the_call(redis_client: Redis) -> None:
    lane = RedisLane(redis_client, timeout=5.0)
    try:
        blocked = asyncio.ensure_future(lane.call("BLPOP", unique("never"), 30))
        for _ in range(2):
            ids = await until_blocked(redis_client, bool)
            await redis_client.client_kill_filter(_id=ids[0])
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(blocked, 10)
        assert await lane.call("PING") == b"PONG"
    finally:
        await lane.aclose()


async def until_blocked(redis: Redis, done: Callable[[list[int]], bool]) -> list[int]:
    """Wait until `done(ids of connections blocked in BLPOP)`; those ids."""
    async with asyncio.timeout(10):
        while True:
            ids = [int(c["id"]) for c in await redis.client_list() if c["cmd"] == "blpop"]
            if done(ids):
                return ids
            await asyncio.sleep(0.01)


async def test_a_reply_later_than_the_timeout_fails_the_call(redis_client: Redis) -> None:
    lane = RedisLane(redis_client, timeout=0.3)
    try:
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(lane.call("BLPOP", unique("never"), 5), 10)
        assert await lane.call("PING") == b"PONG"
    finally:
        await lane.aclose()


async def test_publish_survives_redis_forgetting_its_scripts(redis_client: Redis) -> None:
    """After SCRIPT FLUSH (as after a restart) the publish loads its script again."""
    topology = topology_of(redis_client)
    publisher = Publisher(topology, Keys(unique("k") + ":"), rate=RateLimit(per_window=0))
    try:
        room = unique("r")
        first = await publisher.publish(room, "ann", "before", cid="c1")
        await redis_client.script_flush()
        second = await publisher.publish(room, "ann", "after", cid="c2")
        again = await publisher.publish(room, "ann", "after", cid="c2")
        assert second.id > first.id and again.duplicate and again.id == second.id
    finally:
        lane = topology.lane
        assert lane is not None
        await lane.aclose()
