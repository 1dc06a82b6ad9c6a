"""The chat bus and the session store on a real Redis Cluster (3 primaries, 3 replicas).

Two buses play two processes. Rooms spread over the shards and go live over
shard channels (SPUBLISH/SSUBSCRIBE). When a slot moves to another primary,
or a primary is killed and its replica takes over, members miss nothing and
see nothing twice: the subscriber follows the slot map and repairs from the
room's stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from pubsub import ChatBus, Keys, RateLimit
from redisconn import RedisTarget, connect, topology_of
from redisconn.connect import RedisClient
from rigs.redis_cluster import RedisCluster, free_cluster_ports
from runtime.sockets import SocketRegistry
from sessions import SessionStore
from tests.conftest import unique
from tests.test_bus import Collector

WAIT = 30.0
ROOMS = 6  # enough that every shard owns some


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    folder: Path = tmp_path_factory.mktemp("cluster")
    nodes = RedisCluster("127.0.0.1", free_cluster_ports("127.0.0.1", 6), folder)
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
async def clients(cluster: RedisCluster) -> AsyncIterator[list[RedisClient]]:
    made = [connect(RedisTarget(cluster=cluster.seeds)) for _ in range(2)]
    yield made
    for client in made:
        await client.aclose()


@pytest.fixture
async def two_buses(clients: list[RedisClient]) -> AsyncIterator[tuple[ChatBus, ChatBus]]:
    keys = Keys(unique("k") + ":", sharded=True)
    unlimited = RateLimit(per_window=0)
    buses = (ChatBus(topology_of(clients[0]), "a", keys, rate=unlimited),
             ChatBus(topology_of(clients[1]), "b", keys, rate=unlimited))
    for bus in buses:
        await bus.start()
    yield buses
    for bus in buses:
        await bus.stop()


async def publish_when_up(bus: ChatBus, room: str, text: str) -> str:
    """Publish, retrying while the room's shard fails over."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return (await bus.publish(room, "pub", text)).id
        except (RedisError, OSError):
            assert time.monotonic() < deadline, "the room's shard never came back"
            await asyncio.sleep(0.1)


def move_slot_of(cluster: RedisCluster, key: str, source: int, target: int) -> None:
    """Reshard by hand, as `redis-cli --cluster reshard` does: import, migrate keys, hand over."""
    node_id = {node.port: node.node_id for node in cluster.nodes()}
    slot = str(cluster.command(source, "CLUSTER", "KEYSLOT", key))
    cluster.command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", node_id[source])
    cluster.command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", node_id[target])
    for name in cluster.command(source, "CLUSTER", "GETKEYSINSLOT", slot, "1000"):
        cluster.command(source, "MIGRATE", cluster.host, str(target), name, "0", "5000")
    for port in cluster.primaries():
        cluster.command(port, "CLUSTER", "SETSLOT", slot, "NODE", node_id[target])


def ids(member: Collector, room: str) -> list[str]:
    return [str(chat["id"]) for chat in member.chats(room)]


async def join_rooms(bus: ChatBus, member: Collector) -> list[str]:
    rooms = [unique("room") for _ in range(ROOMS)]
    for room in rooms:
        await bus.join(member, room, None)
    return rooms


async def test_rooms_on_every_shard_chat_across_processes(
    cluster: RedisCluster, two_buses: tuple[ChatBus, ChatBus]
) -> None:
    here, there = two_buses
    bob = Collector("bob")
    rooms = await join_rooms(there, bob)
    shards = {cluster.primary_for(here.keys.stream(room)) for room in rooms}
    assert len(shards) > 1, "the rooms should spread over the shards"
    sent = {room: (await here.publish(room, "alice", f"hi {room}")).id for room in rooms}
    for room in rooms:
        chats = await bob.wait_chats(room, 1)
        assert [(c["id"], c["user"], c["text"]) for c in chats] == [
            (sent[room], "alice", f"hi {room}")
        ]
    # Typing goes over the same shard channels and is never stored.
    await here.publish_typing(rooms[0], "alice")
    deadline = time.monotonic() + WAIT
    while not any('"typing"' in raw and "alice" in raw for raw in bob.raw):
        assert time.monotonic() < deadline, "typing notice never arrived"
        await asyncio.sleep(0.02)


async def test_presence_refresh_of_rooms_on_every_shard(
    cluster: RedisCluster, two_buses: tuple[ChatBus, ChatBus]
) -> None:
    """A batched presence refresh reaches each room's own shard, also after
    every node forgot its scripts: lapsed users are back in every room."""
    here, there = two_buses
    rooms = await join_rooms(here, Collector("stays"))
    for flush in (False, True):
        for room in rooms:
            # Lapsed: a look at the room now would sweep the user out.
            await here.redis.zadd(here.keys.presence(room), {"stays": 1})
        if flush:
            for port in cluster.primaries():
                cluster.command(port, "SCRIPT", "FLUSH")
        await here.presence.refresh_many({room: ["stays"] for room in rooms})
        for room in rooms:
            assert await there.presence.members(room) == ["stays"], (room, flush)


async def test_ending_a_login_reaches_every_process(two_buses: tuple[ChatBus, ChatBus]) -> None:
    here, there = two_buses
    ended: list[str] = []

    class Socket(Collector):
        login_id = "login-1"
        active = False

        def close_draining(self) -> None:
            pass

        def end_session(self) -> None:
            ended.append(self.user)

    sockets = SocketRegistry(max_per_login=20)  # the process's registry, as in runtime/
    sockets.admit(Socket("carol"))
    there.on_login_ended = sockets.end_login
    # Pub/sub is at-most-once and `there` subscribes its control channel in the
    # background after start: say it again until heard (logout's own fallback
    # is the periodic session check).
    deadline = time.monotonic() + WAIT
    while not ended:
        assert time.monotonic() < deadline, "the control message never arrived"
        await here.end_login("login-1")
        for _ in range(10):
            if ended:
                break
            await asyncio.sleep(0.1)
    assert set(ended) == {"carol"}


async def test_sessions_regenerate_and_destroy_across_slots(
    clients: list[RedisClient],
) -> None:
    store = SessionStore(topology_of(clients[0]), unique("s") + ":")
    login = unique("login")
    first = await store.regenerate(None, {"user": "dave"})
    second = await store.regenerate(first, {"user": "dave", "login": login})
    assert await store.get(first) is None
    assert await store.get(second) == {"user": "dave", "login": login}
    assert await store.login_alive(login)
    # A page load keeps the login going; one that lost the race to a logout
    # (the stale id it read) changes nothing.
    third = await store.regenerate(second, {"user": "dave", "login": login}, continues=True)
    assert third and await store.get(third) == {"user": "dave", "login": login}
    assert await store.regenerate(second, {"user": "dave", "login": login}, continues=True) is None
    await store.destroy(second, login)  # the logout still carries the older id
    assert await store.get(third) is None
    assert not await store.login_alive(login)
    assert await store.regenerate(third, {"user": "dave", "login": login}, continues=True) is None
    assert not await store.login_alive(login)


async def test_a_moved_slot_loses_nothing(
    cluster: RedisCluster, two_buses: tuple[ChatBus, ChatBus]
) -> None:
    here, there = two_buses
    bob = Collector("bob")
    room = unique("moving")
    await there.join(bob, room, None)
    before = [await publish_when_up(here, room, f"before {n}") for n in range(5)]
    source = cluster.primary_for(here.keys.stream(room))
    target = next(p for p in cluster.primaries() if p != source)
    move_slot_of(cluster, here.keys.stream(room), source, target)
    after = [await publish_when_up(here, room, f"after {n}") for n in range(5)]
    await bob.wait_chats(room, 10)
    assert ids(bob, room) == before + after


async def test_a_killed_primary_loses_nothing(
    cluster: RedisCluster, two_buses: tuple[ChatBus, ChatBus]
) -> None:
    """Last in this module: the cluster keeps one primary fewer's worth of replicas."""
    here, there = two_buses
    bob = Collector("bob")
    rooms = await join_rooms(there, bob)
    sent: dict[str, list[str]] = {room: [] for room in rooms}
    for n in range(3):
        for room in rooms:
            sent[room].append(await publish_when_up(here, room, f"before {n}"))
    victim = cluster.primary_for(here.keys.stream(rooms[0]))
    cluster.kill(victim)
    # One shard down is not the whole instance down: /healthz stays 200.
    assert await here.trouble() is None
    for n in range(3):
        for room in rooms:
            sent[room].append(await publish_when_up(here, room, f"after {n}"))
    for room in rooms:
        await bob.wait_chats(room, len(sent[room]))
        assert ids(bob, room) == sent[room], f"{room}: missing, repeated or out of order"
