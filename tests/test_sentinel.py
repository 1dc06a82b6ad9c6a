"""Redis behind Sentinel: the primary dies mid-chat, a replica is promoted, nothing is lost.

A one-box stack (supervisord, 2 instances, HAProxy) whose instances follow
the primary through CHAT_REDIS_SENTINELS (rigs.sentinel: a primary, two
replicas, three sentinels on loopback). The instances ack a message only
once a replica holds it (CHAT_REDIS_WAIT_REPLICAS=1), which is what makes
"acknowledged" survive the crash of the primary.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from rigs.ports import free_port, settings_on_free_ports
from rigs.sentinel import SentinelSet
from stack.run import Stack
from tests.conftest import unique
from tests.fleet_support import chat_ids, join, pinned_user, say

pytestmark = pytest.mark.cluster

# Under the history a fresh join replays (50), so the whole room is checked.
MESSAGES = 30
BEFORE_KILL = 8
SEND_PAUSE_SECONDS = 0.1


@dataclasses.dataclass
class SentinelStack:
    redis: SentinelSet
    stack: Stack


@pytest.fixture(scope="module")
def sentinel_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelStack]:
    root = tmp_path_factory.mktemp("sentinel")
    taken: set[int] = set()
    redis = SentinelSet([free_port(taken) for _ in range(3)],
                        [free_port(taken) for _ in range(3)], root / "redis")
    redis.start()
    settings = dataclasses.replace(
        settings_on_free_ports(2, root / "stack"),
        redis_url=f"redis://127.0.0.1:{redis.primary()}/0",
        redis_sentinels=redis.sentinels,
        sentinel_master=redis.master,
    )
    # Messages come faster than a person types; the rate limit is not under test.
    stack = Stack(settings, env={"CHAT_REDIS_WAIT_REPLICAS": "1", "CHAT_RATE_LIMIT": "0"})
    try:
        stack.start()
        stack.wait_ready()
        yield SentinelStack(redis, stack)
    finally:
        stack.stop()
        redis.stop()


async def test_primary_killed_sentinel_promotes_and_no_ack_is_lost(
    sentinel_stack: SentinelStack,
) -> None:
    redis, stack = sentinel_stack.redis, sentinel_stack.stack
    room = unique("r")
    ann_http, ann = await pinned_user(stack.url, "chat1", unique("ann"))
    bob_http, bob = await pinned_user(stack.url, "chat2", unique("bob"))
    for sock in (ann, bob):
        await join(sock, room)

    acked: list[str] = []
    some_acked = asyncio.Event()

    async def keep_talking() -> None:
        for i in range(MESSAGES):
            acked.append(await say(bob, room, f"message {i}"))
            if len(acked) == BEFORE_KILL:
                some_acked.set()
            await asyncio.sleep(SEND_PAUSE_SECONDS)

    talking = asyncio.create_task(keep_talking())
    await asyncio.wait_for(some_acked.wait(), 30)
    old = redis.primary()
    redis.kill(old)  # kill -9 mid-conversation
    new = await asyncio.to_thread(redis.wait_failover, old)
    assert new != old
    await talking  # every message acknowledged in the end (resent on `unavailable`)

    await ann.next_of("chat", room=room, id=acked[-1], timeout=60)
    assert chat_ids(ann, room) == acked  # live through the failover: no gap, no repeat
    cat_http, cat = await pinned_user(stack.url, "chat1", unique("cat"))
    history = await join(cat, room)
    assert history == acked  # the promoted primary holds every acknowledged message
    for thing in (ann, bob, cat, ann_http, bob_http, cat_http):
        thing.close()
