"""Outgrowing one machine, proved on one: three "hosts", one front door, a Redis Cluster.

Each host is a network namespace on a bridge (tests/netns.py) running its own
supervisord with 2 chat processes on its own address; one HAProxy on
127.0.0.1 is the front door over all 6 (stack.front, rendered from the
project's haproxy.cfg); a 3-primary/3-replica Redis Cluster listens on the
bridge, where every host reaches it. Users on different hosts chat; a Redis
primary is killed and its replica takes over; a host is cut off and its users
resume on the others. Only addresses made here and loopback are used, and
everything is stopped by pid and deleted at the end, failed or not.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatclient import ChatSocket, HttpSession
from rigs.ports import free_port
from rigs.redis_cluster import RedisCluster, free_cluster_ports
from stack.front import FrontDoor
from stack.render import Server
from stack.run import Stack
from stack.settings import StackSettings
from tests.conftest import unique
from tests.fleet_support import chat_ids, id_key, instance_of, join, pinned_user, resume, say
from tests.netns import HostNet, namespaces_fail, unavailable_reason

UNAVAILABLE = unavailable_reason()
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"multi-host tests: {UNAVAILABLE}"),
]

HOSTS = 3
PER_HOST = 2
PRIMARIES = 3
# Host i's processes listen on PORT_BASE + 10 * (i - 1) + 1 .. + PER_HOST. The
# ports differ between hosts because an instance id is hostname:port and the
# namespaces share this machine's hostname (real hosts have their own).
PORT_BASE = 8000
# A cut-off host's open tunnels are ended by HAProxy's TCP keepalive and user
# timeout (haproxy.cfg); its users are back well within this.
CUT_OFF_CLOSE_SECONDS = 45.0


@dataclass
class Fleet:
    net: HostNet
    cluster: RedisCluster
    hosts: list[Stack]
    front: FrontDoor

    def servers_of(self, host: int) -> list[str]:
        """HAProxy's names (cookie values) of host `host`'s chat processes."""
        first = (host - 1) * PER_HOST + 1
        return [f"chat{n}" for n in range(first, first + PER_HOST)]

    def host_of(self, instance: str) -> int:
        port = int(instance.rsplit(":", 1)[1])
        return (port - PORT_BASE - 1) // 10 + 1


def host_settings(net: HostNet, i: int, cluster: RedisCluster, var: Path) -> StackSettings:
    return StackSettings(
        instances=PER_HOST,
        port_base=PORT_BASE + 10 * (i - 1),
        redis_url=f"redis://{cluster.host}:{cluster.ports[0]}/0",
        var=var,
        address=net.address(i),
        starts_haproxy=False,
        redis_cluster=cluster.seeds,
        auth="open",
    )


def stop_all(stacks: list[Stack]) -> None:
    """Stop every host's supervisord at once (each drains for a few seconds)."""
    threads = [threading.Thread(target=s.stop) for s in stacks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    cannot = namespaces_fail()
    if cannot is not None:
        pytest.skip(f"multi-host tests: {cannot}")
    root = tmp_path_factory.mktemp("multihost")
    net = HostNet(HOSTS)
    net.open()
    cluster: RedisCluster | None = None
    hosts: list[Stack] = []
    front: FrontDoor | None = None
    try:
        cluster = RedisCluster(net.gateway, free_cluster_ports(net.gateway, 2 * PRIMARIES),
                               root / "cluster")
        cluster.start()
        env = {"CHAT_COOKIE_SECRET": secrets.token_urlsafe(32)}  # one secret on every host
        for i in range(1, HOSTS + 1):
            stack = Stack(host_settings(net, i, cluster, root / f"host{i}"), env=env,
                          wrapper=net.exec_prefix(i))
            hosts.append(stack)
            stack.start()
        for stack in hosts:
            stack.wait_ready()
        places = [(s.settings.address, port) for s in hosts for port in s.settings.instance_ports()]
        servers = [Server(f"chat{n}", host, port) for n, (host, port) in enumerate(places, 1)]
        front = FrontDoor(f"127.0.0.1:{free_port()}", servers, root / "front")
        front.start()
        front.wait_ready()
        yield Fleet(net, cluster, hosts, front)
    finally:
        if front is not None:
            front.stop()
        stop_all(hosts)
        if cluster is not None:
            cluster.stop()
        net.close()


def close_all(*things: HttpSession | ChatSocket) -> None:
    for thing in things:
        thing.close()


async def test_users_on_different_hosts_chat(fleet: Fleet) -> None:
    room = unique("r")
    users = []
    for host in range(1, HOSTS + 1):
        http, sock = await pinned_user(fleet.front.url, fleet.servers_of(host)[0], unique("u"))
        assert fleet.host_of(await instance_of(http)) == host
        await join(sock, room)
        users.append((http, sock))
    said = [await say(sock, room, f"hello from host {n}")
            for n, (_, sock) in enumerate(users, start=1)]
    for _, sock in users:
        await sock.next_of("chat", room=room, id=said[-1])
        assert chat_ids(sock, room) == said  # everyone, every host, same order
    close_all(*(t for pair in users for t in pair))


async def test_redis_primary_killed_replica_takes_over(fleet: Fleet) -> None:
    room = unique("r")
    ann_http, ann = await pinned_user(fleet.front.url, fleet.servers_of(1)[0], unique("ann"))
    bob_http, bob = await pinned_user(fleet.front.url, fleet.servers_of(2)[0], unique("bob"))
    for sock in (ann, bob):
        await join(sock, room)
    acked = [await say(bob, room, f"before {i}") for i in range(3)]
    await ann.next_of("chat", room=room, id=acked[-1])

    primary = fleet.cluster.primary_for("{" + room + "}")  # the room's shard
    fleet.cluster.kill(primary)
    acked += [await say(bob, room, f"during {i}") for i in range(3)]
    heir = fleet.cluster.wait_failover(primary)
    assert fleet.cluster.primary_for("{" + room + "}") == heir
    acked += [await say(bob, room, f"after {i}") for i in range(3)]

    await ann.next_of("chat", room=room, id=acked[-1], timeout=60)
    assert chat_ids(ann, room) == acked  # live through the failover: no gap, no repeat
    # A user coming back from before the kill gets exactly what was said since.
    back, replayed = await resume(ann_http, room, after=acked[2])
    assert replayed == acked[3:]
    assert sorted(acked, key=id_key) == acked
    close_all(ann, back, bob, ann_http, bob_http)


async def test_host_cut_off_users_resume_on_the_others(fleet: Fleet) -> None:
    room = unique("r")
    ann_http, ann = await pinned_user(fleet.front.url, fleet.servers_of(1)[0], unique("ann"))
    bob_http, bob = await pinned_user(fleet.front.url, fleet.servers_of(2)[0], unique("bob"))
    for sock in (ann, bob):
        await join(sock, room)
    last = await say(bob, room, "before")
    await ann.next_of("chat", room=room, id=last)

    fleet.net.cut(1)
    try:
        # Ann types while her host is gone: never acknowledged there.
        typed = unique("c")
        await ann.send({"type": "chat", "room": room, "text": "typed while cut off",
                        "cid": typed})
        missed = [await say(bob, room, f"while away {i}") for i in range(5)]
        await ann.closed(timeout=CUT_OFF_CLOSE_SECONDS)  # the front door gave up on host 1
        await asyncio.to_thread(fleet.front.wait_servers, "DOWN", fleet.servers_of(1))

        back, replayed = await resume(ann_http, room, after=last)
        assert replayed == missed  # exactly what she missed: no gap, no repeat
        assert fleet.host_of(await instance_of(ann_http)) != 1
        resent = await say(back, room, "typed while cut off", cid=typed)
        seen = await bob.next_of("chat", room=room, id=resent)
        assert seen["text"] == "typed while cut off"
        assert chat_ids(bob, room) == [last, *missed, resent]  # stored once, in order
        close_all(ann, back, bob, ann_http, bob_http)
    finally:
        fleet.net.mend(1)
