"""Edits, deletes, and a resume that says when it cannot (docs/protocol.md: Edits
and deletes; Resume that says when it cannot), across both instances."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from chatclient import ChatSocket, HttpSession
from pubsub.keys import Keys
from stack.run import Stack
from tests.chat_users import User, logged_in, people
from tests.conftest import free_port, lone_instance, unique, wait_for_port

__all__ = ["people"]  # the fixture, imported for pytest to find

pytestmark = pytest.mark.cluster



async def test_an_edit_reaches_everyone_and_every_later_read(people: Any) -> None:
    ann, bob = await people(0), await people(1)
    room = unique("r")
    await ann.join(room)
    await bob.join(room)
    first = await ann.say(room, "helo")
    assert await ann.change(type="edit", room=room, id=first, text="hello") is None
    edited = await bob.sock.next_of("edited", room=room, id=first)
    assert edited["text"] == "hello"
    late = await people(1)
    await late.join(room)
    recent = [f for f in late.sock.frames if f["type"] == "chat" and f["room"] == room]
    assert [(f["text"], f.get("edited")) for f in recent] == [("hello", True)]
    await late.sock.send({"type": "history", "room": room})
    page = await late.sock.next_of("history", room=room)
    assert [(m["id"], m["text"], m.get("edited")) for m in page["messages"]] == \
        [(first, "hello", True)]


async def test_only_the_author_edits_and_moderators_delete(people: Any) -> None:
    owner, ann, bob = await people(0), await people(1), await people(0)
    room = unique("r")
    await owner.join(room)  # the first joiner owns the room
    for client in (ann, bob):
        await client.join(room)
    message = await ann.say(room, "ann's words")
    assert (await bob.change(type="edit", room=room, id=message, text="bob's"))["code"] \
        == "forbidden"
    assert (await owner.change(type="edit", room=room, id=message, text="owner's"))["code"] \
        == "forbidden"
    assert (await bob.change(type="delete", room=room, id=message))["code"] == "forbidden"
    assert await owner.change(type="delete", room=room, id=message) is None
    await ann.sock.next_of("deleted", room=room, id=message)
    await owner.sock.send({"type": "audit", "room": room})
    trail = (await owner.sock.next_of("audit", room=room))["entries"]
    assert (trail[-1]["action"], trail[-1]["user"], trail[-1]["message"]) == \
        ("delete", ann.name, message)
    mine = await bob.say(room, "bob's own")
    assert await bob.change(type="delete", room=room, id=mine) is None


async def test_a_deleted_text_is_gone_from_redis(people: Any, stack: Stack) -> None:
    ann = await people(0)
    room = unique("r")
    await ann.join(room)
    secret = f"secret-{unique('s')}"
    message = await ann.say(room, secret)
    edited_secret = f"edited-{unique('s')}"
    assert await ann.change(type="edit", room=room, id=message, text=edited_secret) is None
    assert await ann.change(type="delete", room=room, id=message) is None
    redis = Redis.from_url(stack.settings.effective_redis_url)
    try:
        keys = Keys()
        stored = json.dumps([str(r) for r in await redis.xrange(keys.stream(room))])
        stored += json.dumps(str(await redis.hgetall(keys.edits(room))))
        for key in await redis.keys(f"*{room}*"):
            if (await redis.type(key)) == b"string":
                stored += str(await redis.get(key))
        assert secret not in stored and edited_secret not in stored
        assert "delete" in stored  # what remains: that the id was deleted, and by whom
    finally:
        await redis.aclose()


async def test_a_resume_brings_the_edits_and_deletes_made_while_away(people: Any) -> None:
    ann, bob = await people(0), await people(1)
    room = unique("r")
    await ann.join(room)
    await bob.join(room)
    kept = await bob.say(room, "first draft")
    gone = await bob.say(room, "regret this")
    last_seen = await bob.say(room, "third")
    await ann.sock.next(lambda f: f.get("id") == last_seen)
    ann.close()
    assert await bob.change(type="edit", room=room, id=kept, text="final text") is None
    assert await bob.change(type="delete", room=room, id=gone) is None
    later = await bob.say(room, "later draft")
    assert await bob.change(type="edit", room=room, id=later, text="later final") is None
    doomed = await bob.say(room, "later regret")
    assert await bob.change(type="delete", room=room, id=doomed) is None
    back = await people(1, name=ann.name)
    await back.join(room, after=last_seen)
    frames = [f for f in back.sock.frames if f.get("room") == room]
    assert {"type": "edited", "room": room, "id": kept, "text": "final text"} in frames
    assert {"type": "deleted", "room": room, "id": gone} in frames
    chats = [(f["id"], f["text"]) for f in frames if f["type"] == "chat"]
    assert chats == [(later, "later final")]
    assert not any(f["type"] == "reset" for f in frames)
    for stale in ("regret this", "later regret", "later draft", "first draft"):
        assert stale not in back.text_seen()


async def test_bad_edits_and_deletes(people: Any) -> None:
    ann = await people(0)
    room = unique("r")
    await ann.join(room)
    message = await ann.say(room, "x")
    for frame in ({"type": "edit", "room": room, "id": "1-1", "text": "y"},
                  {"type": "delete", "room": room, "id": "1-1"},
                  {"type": "edit", "room": room, "id": "nonsense", "text": "y"},
                  {"type": "edit", "room": room, "id": message, "text": " "},
                  {"type": "edit", "room": room, "id": message}):
        await ann.sock.send(frame)
        assert (await ann.sock.next_of("error"))["code"] == "bad_frame", frame
    assert await ann.change(type="delete", room=room, id=message) is None
    # The delete's own event is not a message either.
    event_ids = [f for f in ann.sock.frames if f["type"] == "deleted"]
    assert event_ids
    assert (await ann.change(type="delete", room=room, id=message))["code"] == "bad_frame"
    other = unique("r")
    assert (await ann.change(type="edit", room=other, id=message, text="z"))["code"] \
        in ("not_joined", "forbidden")


async def test_reset_trimmed_only_when_messages_were_trimmed(stack: Stack) -> None:
    with lone_instance(stack, "--stream-maxlen=10", "--rate-limit=0") as url:
        client = await logged_in(url)
        http, sock = client.http, client.sock
        try:
            room = unique("r")
            await client.join(room)
            first = await client.say(room, "m-0")
            second = await client.say(room, "m-1")
            # A delete is not a trim.
            assert await client.change(type="delete", room=room, id=second) is None
            await client.join(room, after=first)
            assert not [f for f in sock.frames if f["type"] == "reset"]
            for n in range(2, 130):
                await client.say(room, f"m-{n}")
            await client.join(room, after=first)
            resets = [(f["reason"], f["epoch"]) for f in sock.frames if f["type"] == "reset"]
            assert resets == [("trimmed", (await client.join(room))["epoch"])]
            sock.close()
        finally:
            http.close()


async def test_reset_lost_when_the_epoch_changed(people: Any) -> None:
    ann = await people(0)
    room = unique("r")
    presence = await ann.join(room)
    first = await ann.say(room, "one")
    epoch = (await ann.join(room))["epoch"]
    assert epoch and presence["epoch"] == epoch  # a room has its epoch from its creation
    await ann.join(room, after=first, epoch=epoch)
    assert not [f for f in ann.sock.frames if f["type"] == "reset"]
    before = len(ann.sock.frames)
    await ann.join(room, after=first, epoch="0123abcd")
    resets = [(f["reason"], f["epoch"]) for f in ann.sock.frames if f["type"] == "reset"]
    assert resets == [("lost", epoch)]  # and the room's epoch to keep from now on
    # The recent messages follow as for a plain join, the one at `after` too.
    assert [f["id"] for f in ann.sock.frames[before:] if f["type"] == "chat"] == [first]


def start_redis(argv: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(int(argv[argv.index("--port") + 1]))
    return proc


async def test_a_redis_back_without_its_data_is_reported(stack: Stack, tmp_path: Path) -> None:
    """Resume and the subscriber's own repair both say `lost` rather than leave a hole."""
    port = free_port()
    binary = shutil.which("redis-server")
    assert binary
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(tmp_path)]
    redis_proc = start_redis(argv)
    try:
        with lone_instance(stack, f"--redis-url=redis://127.0.0.1:{port}/0",
                           "--rate-limit=0") as url:
            client = await logged_in(url)
            http, sock = client.http, client.sock
            try:
                room = unique("r")
                await client.join(room)
                last = await client.say(room, "before the loss")
                epoch = (await client.join(room, after=last))["epoch"]
                redis_proc.kill()
                redis_proc.wait()
                redis_proc = start_redis(argv)
                # The subscriber reconnects and repairs the room: it is gone.
                reset = await sock.next_of("reset", room=room, timeout=60)
                assert reset["reason"] == "lost" and reset["epoch"] != epoch
            finally:
                http.close()
            # A returning client with the old epoch is told too (a new login: the
            # sessions went with the data).
            again = HttpSession(url)
            try:
                for _ in range(100):
                    if (await again.login(unique("t"))).code == 302:
                        break
                    await asyncio.sleep(0.1)
                sock2 = await ChatSocket.connect(again)
                back = User("t2", again, sock2)
                await back.join(room, after=last, epoch=epoch)
                assert [f["reason"] for f in sock2.frames
                        if f["type"] == "reset" and f["room"] == room] == ["lost"]
                sock2.close()
            finally:
                again.close()
    finally:
        if redis_proc.poll() is None:
            redis_proc.terminate()
            redis_proc.wait(10)
