"""The chat bus on a Sentinel-watched primary: acked means on a replica, so a failover loses no ack.

With `wait_replicas=1` the publish script and a WAIT go in one pipeline, and
the ack (the message id) is returned only once a replica holds the message.
The primary is killed right after the last ack, with no pause for
replication to catch up: every acked message must be in the promoted
replica's stream, and the bus follows the new primary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from pubsub import ChatBus, Keys, RateLimit
from pubsub.codec import format_id
from pubsub.history import Entry
from redisconn import RedisTarget, connect, topology_of
from rigs.ports import free_port
from rigs.sentinel import SentinelSet
from tests.conftest import unique
from tests.test_bus import Collector

WAIT = 30.0


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    taken: set[int] = set()
    nodes = SentinelSet([free_port(taken) for _ in range(3)],
                        [free_port(taken) for _ in range(3)], tmp_path)
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


async def publish_when_up(bus: ChatBus, room: str, text: str, cid: str) -> str:
    """Publish, resending with the same cid while the failover runs (as a client does)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return (await bus.publish(room, "ann", text, cid)).id
        except (RedisError, OSError):
            assert time.monotonic() < deadline, "no primary came back"
            await asyncio.sleep(0.2)


async def stored(bus: ChatBus, room: str) -> list[Entry]:
    """The room's stream, read again while the first call after a failover fails
    (redis-py reconnects to the new primary on the next call, as a client's retry does)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return await bus.history.recent(room, 100)
        except (RedisError, OSError):
            assert time.monotonic() < deadline, "the new primary never answered"
            await asyncio.sleep(0.2)


async def test_acked_messages_survive_a_primary_crash(sentinels: SentinelSet) -> None:
    redis = connect(RedisTarget(sentinels=sentinels.sentinels, sentinel_master=sentinels.master))
    bus = ChatBus(topology_of(redis), "a", Keys(unique("k") + ":"), rate=RateLimit(per_window=0),
                  wait_replicas=1)
    await bus.start()
    try:
        room = unique("room")
        bob = Collector("bob")
        await bus.join(bob, room, None)
        acked = [await publish_when_up(bus, room, f"m{n}", f"c{n}") for n in range(50)]
        old = sentinels.primary()
        sentinels.kill(old)
        new = sentinels.wait_failover(old)
        assert new != old
        entries = [format_id(e.key) for e in await stored(bus, room)]
        assert entries == acked, "an acked message is missing after the failover"
        after = await publish_when_up(bus, room, "after the failover", "c-after")
        await bob.wait_chats(room, 51)
        assert [c["id"] for c in bob.chats(room)] == [*acked, after]
    finally:
        await bus.stop()
        await redis.aclose()


async def test_no_ack_while_no_replica_holds_the_message(sentinels: SentinelSet) -> None:
    """Replicas gone: the primary may still store the message, but the sender gets no ack."""
    redis = connect(RedisTarget(sentinels=sentinels.sentinels, sentinel_master=sentinels.master))
    bus = ChatBus(topology_of(redis), "a", Keys(unique("k") + ":"), rate=RateLimit(per_window=0),
                  wait_replicas=1)
    try:
        room = unique("room")
        assert (await bus.publish(room, "ann", "replicated", "c1")).id
        primary = sentinels.primary()
        for port in sentinels.data_ports:
            if port != primary:
                sentinels.kill(port)
        with pytest.raises(RedisError):
            await bus.publish(room, "ann", "not replicated", "c2")
    finally:
        await redis.aclose()
