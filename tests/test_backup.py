"""Backups that restore (README: Backups and restore): `python -m stack.backup` while the
chat runs, a wiped stack, `python -m stack.restore`, and everything is back.

The stacks here are the tests' own (accounts mode), stopped and wiped in the
middle; the session's stacks are never touched. The commands run as the operator
runs them, in a subprocess with the stack's environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chatclient import ChatSocket, HttpSession
from rigs.ports import free_port_run
from stack.settings import StackSettings
from tests.chat_users import User
from tests.conftest import free_port, running_stack, unique, wait_for_port

PROJECT = Path(__file__).resolve().parent.parent
# The backup waits for Redis's repl-diskless-sync-delay (5 s) before the fork.
COMMAND_TIMEOUT = 120.0
HISTORY_LIMIT = 100
CHATTER_PAUSE_SECONDS = 0.6  # under the chat rate limit (20 per 10 s)

Frame = dict[str, Any]


def command(module: str, settings: StackSettings, *args: str,
            redis_url: str = "") -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS` as `make backup` / `make restore` run it for this stack."""
    env = {**os.environ, "CHAT_VAR": str(settings.var),
           "CHAT_REDIS_PORT": str(settings.redis_port),
           "CHAT_PORT_BASE": str(settings.port_base),
           "CHAT_INSTANCES": str(settings.instances),
           "CHAT_HTTP_PORT": str(settings.http_port)}
    for name in ("CHAT_REDIS_URL", "CHAT_REDIS_CLUSTER", "CHAT_REDIS_SENTINELS",
                 "CHAT_BACKUP_DIR"):
        env.pop(name, None)
    if redis_url:
        env["CHAT_REDIS_URL"] = redis_url
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)


def backup_folder(done: subprocess.CompletedProcess[str]) -> Path:
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


async def connect(url: str, name: str, password: str, signup: bool = False) -> User:
    http = HttpSession(url)
    answer = await (http.signup(name, password) if signup else http.login(name, password))
    assert answer.code == 302, (name, answer.code)
    sock = await ChatSocket.connect(http)
    await sock.next_of("presence", room="lobby")
    return User(name, http, sock)


async def history(user: User, room: str) -> list[Frame]:
    await user.send(type="history", room=room, limit=HISTORY_LIMIT)
    messages: list[Frame] = (await user.sock.next_of("history", room=room))["messages"]
    return messages


async def hello_rooms(user: User) -> list[str]:
    again = await ChatSocket.connect(user.http)
    try:
        rooms: list[str] = (await again.next_of("hello"))["rooms"]
        return rooms
    finally:
        again.close()


def everything_in(url: str) -> dict[str, str]:
    """Every key of the Redis at `url` with its value, as strings to search."""
    reads = {b"string": lambda c, k: c.get(k), b"hash": lambda c, k: c.hgetall(k),
             b"stream": lambda c, k: c.xrange(k), b"list": lambda c, k: c.lrange(k, 0, -1),
             b"set": lambda c, k: c.smembers(k), b"zset": lambda c, k: c.zrange(k, 0, -1)}
    with redis.Redis.from_url(url) as client:
        return {key.decode(): repr(reads[client.type(key)](client, key))
                for key in client.keys()}


async def chatter(user: User, stop: asyncio.Event, said: list[str]) -> None:
    """Keep talking in the lobby until `stop`: the backup is taken under live traffic."""
    while not stop.is_set():
        said.append(await user.say("lobby", unique("busy")))
        await asyncio.sleep(CHATTER_PAUSE_SECONDS)


@pytest.mark.cluster
async def test_a_backup_taken_during_chat_restores_into_a_wiped_stack(tmp_path: Path) -> None:
    var, backups = tmp_path / "stack", tmp_path / "backups"
    passwords = {unique(n): f"pw-{uuid.uuid4().hex}" for n in ("ann", "bob", "cy")}
    made: list[User] = []
    # Texts of deleted messages, first and edited: never seen again after the restore.
    deleted_texts = [unique("gone"), unique("secret"), unique("secret-edited"),
                     unique("edited-then-gone")]
    with running_stack(var, auth="accounts") as stack:
        for name, password in passwords.items():
            made.append(await connect(stack.url, name, password, signup=True))
        ann, bob, cy = made
        # A public room (ann owns it), with an edit and deletes by author and owner.
        pub = unique("pub")
        await ann.join(pub)
        await bob.join(pub)
        first = await ann.say(pub, unique("hello"))
        assert await ann.change(type="edit", room=pub, id=first, text="hello, edited") is None
        gone = await bob.say(pub, deleted_texts[0])
        assert await bob.change(type="delete", room=pub, id=gone) is None
        twice = await bob.say(pub, unique("draft"))
        assert await bob.change(type="edit", room=pub, id=twice, text=deleted_texts[3]) is None
        assert await ann.change(type="delete", room=pub, id=twice) is None
        await bob.say(pub, unique("kept"))
        # A private room: bob a member and moderator, cy outside.
        priv = await ann.private_room(bob)
        await ann.done(type="role", room=priv, user=bob.name, role="moderator")
        await bob.join(priv)
        secret = await ann.say(priv, deleted_texts[1])
        assert await ann.change(type="edit", room=priv, id=secret, text=deleted_texts[2]) is None
        assert await bob.change(type="delete", room=priv, id=secret) is None
        await bob.say(priv, unique("members only"))
        # A direct-message room of ann and cy.
        await ann.send(type="dm", user=cy.name)
        dm = (await ann.sock.next_of("dm", user=cy.name))["room"]
        await cy.join(dm)
        await cy.say(dm, unique("psst"))
        readers = {pub: 0, priv: 1, dm: 2}  # a member of each: ann, bob, cy
        before = {room: await history(made[n], room) for room, n in readers.items()}
        epoch = (await ann.join(pub))["epoch"]
        last_seen = before[pub][-1]["id"]

        stop, said = asyncio.Event(), [await cy.say("lobby", unique("busy"))]
        talking = asyncio.create_task(chatter(cy, stop, said))
        said_before = len(said)
        taken = await asyncio.to_thread(command, "stack.backup", stack.settings,
                                        "--to", str(backups))
        stop.set()
        await talking
        folder = backup_folder(taken)
        assert folder.parent == backups
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["sha256"] == hashlib.sha256((folder / "dump.rdb").read_bytes()).hexdigest()
        assert manifest["keys"] > 0 and manifest["redis_version"] and manifest["created"]
        lobby_before = await history(ann, "lobby")
        # After the backup: gone again once it is restored.
        await ann.say(pub, unique("after the backup"))
        late_name, late_password = unique("late"), f"pw-{uuid.uuid4().hex}"
        made.append(await connect(stack.url, late_name, late_password, signup=True))
        # The running stack is not restored into.
        refused = await asyncio.to_thread(command, "stack.restore", stack.settings,
                                          str(folder))
        assert refused.returncode == 1 and "the stack is running" in refused.stderr
        settings = stack.settings
        for user in made:
            user.close()
        made.clear()

    shutil.rmtree(var / "redis")  # the wipe: every file of the stack's Redis
    restored = await asyncio.to_thread(command, "stack.restore", settings, str(folder))
    assert restored.returncode == 0, restored.stderr

    with running_stack(var, auth="accounts") as stack:
        try:
            for name, password in passwords.items():
                made.append(await connect(stack.url, name, password))
            ann, bob, cy = made
            late = HttpSession(stack.url)
            assert (await late.login(late_name, late_password)).code == 401
            late.close()
            for room, n in readers.items():
                assert (await made[n].join(room))["type"] == "presence"
                assert await history(made[n], room) == before[room], room
            # The lobby as the snapshot caught it: a prefix of what was said, whole,
            # holding at least what was acknowledged before the backup began.
            lobby = await history(ann, "lobby")
            assert lobby == lobby_before[:len(lobby)]
            ids = [m["id"] for m in lobby]
            assert set(said[:said_before]) <= set(ids)
            # Private membership and roles, as they were.
            assert priv in await hello_rooms(bob) and dm in await hello_rooms(cy)
            assert (await bob.join(priv))["role"] == "moderator"
            assert (await cy.join(priv))["code"] == "forbidden"
            assert await cy.error(type="history", room=priv) == "forbidden"
            # A browser that had the room before is told its history started over.
            await ann.join(pub, after=last_seen, epoch=epoch)
            resets = [f for f in ann.sock.frames if f["type"] == "reset" and f["room"] == pub]
            assert [r["reason"] for r in resets] == ["lost"]
            stored = everything_in(stack.settings.effective_redis_url)
            assert any(before[pub][-1]["text"] in value for value in stored.values())
            for text in deleted_texts:
                assert [k for k, v in stored.items() if text in v] == []
                assert not any(text in user.text_seen() for user in made)
            # And the chat goes on.
            await ann.say(pub, unique("after the restore"))
        finally:
            for user in made:
                user.close()


@pytest.fixture
def lone_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own (no wait before a backup's fork)."""
    binary = shutil.which("redis-server")
    assert binary
    port = free_port()
    folder = tmp_path / "lone-redis"
    folder.mkdir()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(folder), "--repl-diskless-sync-delay", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def stopped_stack(tmp_path: Path) -> StackSettings:
    """Settings of a stack that is not running (nothing listens on its ports)."""
    return StackSettings(http_port=free_port(), port_base=free_port_run(2),
                         redis_port=free_port(), var=tmp_path / "var")


def contents(client: redis.Redis, key: bytes) -> Any:
    """A key's value, in an order that does not depend on the server's hash tables."""
    kind = client.type(key)
    if kind == b"set":
        return sorted(client.smembers(key))
    if kind == b"hash":
        return sorted(client.hgetall(key).items())
    if kind == b"stream":
        return client.xrange(key)
    return client.get(key)


def at_db(url: str, db: int) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(url)
    pool.connection_kwargs["db"] = db
    return redis.Redis(connection_pool=pool)


def fill(url: str) -> None:
    """Keys of several kinds in two databases, some expiring."""
    for db in (0, 3):
        with at_db(url, db) as client:
            client.set(f"s{db}", "v", ex=3600)
            client.hset(f"chat:{{r{db}}}:meta", mapping={"epoch": "e0", "owner": "ann"})
            client.xadd(f"chat:{{r{db}}}:stream", {"text": "hi"})
            client.sadd(f"set{db}", "a", "b", "c")


def read(url: str) -> dict[tuple[int, bytes], tuple[Any, bool]]:
    """Every key of every database: its contents, and whether it expires."""
    found = {}
    for db in range(16):
        with at_db(url, db) as client:
            for key in client.keys():
                found[(db, key)] = (contents(client, key), client.ttl(key) > 0)
    return found


def test_restore_refuses_a_damaged_backup_and_changes_nothing(lone_redis: str,
                                                              tmp_path: Path) -> None:
    settings = stopped_stack(tmp_path)
    fill(lone_redis)
    folder = backup_folder(command("stack.backup", settings, "--redis-url", lone_redis,
                                   "--to", str(tmp_path / "b")))
    data = settings.var / "redis"
    data.mkdir(parents=True)
    (data / "keep-me").write_text("the stack's data")
    rdb = folder / "dump.rdb"
    body = bytearray(rdb.read_bytes())
    body[len(body) // 2] ^= 0xFF
    rdb.write_bytes(bytes(body))
    refused = command("stack.restore", settings, str(folder))
    assert refused.returncode == 1
    assert "is damaged" in refused.stderr and "nothing was restored" in refused.stderr
    # A manifest made to match: the RDB's own checksum still refuses it.
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"] = hashlib.sha256(rdb.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    refused = command("stack.restore", settings, str(folder))
    assert refused.returncode == 1 and "not a sound RDB file" in refused.stderr
    assert sorted(p.name for p in settings.var.iterdir()) == ["redis"]
    assert [p.name for p in data.iterdir()] == ["keep-me"]


def test_an_outside_redis_is_backed_up_and_restored_over_the_network(
    lone_redis: str, tmp_path: Path
) -> None:
    """CHAT_REDIS_URL: no disk of its to read or write; keys, TTLs and databases kept."""
    settings = stopped_stack(tmp_path)
    fill(lone_redis)
    made = read(lone_redis)
    folder = backup_folder(command("stack.backup", settings, "--to", str(tmp_path / "b"),
                                   redis_url=lone_redis))
    with redis.Redis.from_url(lone_redis) as client:
        client.flushall()
        client.set("stray", "1")
    refused = command("stack.restore", settings, str(folder), redis_url=lone_redis)
    assert refused.returncode == 1 and "not empty" in refused.stderr
    with redis.Redis.from_url(lone_redis) as client:
        client.flushall()
    restored = command("stack.restore", settings, str(folder), redis_url=lone_redis)
    assert restored.returncode == 0, restored.stderr
    restored_keys = read(lone_redis)
    for db in (0, 3):  # every room has a new epoch; the rest is as it was
        meta = (db, f"chat:{{r{db}}}:meta".encode())
        now, was = dict(restored_keys.pop(meta)[0]), dict(made.pop(meta)[0])
        assert now.pop(b"epoch") != was.pop(b"epoch")
        assert now == was == {b"owner": b"ann"}
    assert restored_keys == made
