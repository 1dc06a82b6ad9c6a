"""Chat across processes through HAProxy: fan-out, acks, resume, presence notices, limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import msgpack
import pytest
from redis.asyncio import Redis

from chatclient import ChatSocket, HttpSession
from stack.run import Stack
from tests.conftest import lone_instance, unique

Pinned = Callable[[str, int], Awaitable[tuple[HttpSession, ChatSocket]]]


@pytest.fixture
async def pinned(stack: Stack) -> AsyncIterator[Pinned]:
    """Log a user in through HAProxy pinned (by HAProxy's cookie) to instance n, open /ws."""
    opened: list[tuple[HttpSession, ChatSocket]] = []

    async def make(user: str, n: int) -> tuple[HttpSession, ChatSocket]:
        http = HttpSession(stack.url)
        http.cookies["chatfleet_server"] = f"chat{n}"
        assert (await http.login(user)).code == 302
        sock = await ChatSocket.connect(http)
        hello = await sock.next_of("hello")
        assert hello["instance"].endswith(f":{stack.settings.port_base + n}")
        await sock.next_of("presence", room="lobby")
        opened.append((http, sock))
        return http, sock

    yield make
    for http, sock in opened:
        sock.close()
        http.close()


async def join(sock: ChatSocket, room: str, after: str | None = None) -> list[dict[str, object]]:
    """Join and return the chat frames replayed before the presence frame."""
    frame: dict[str, object] = {"type": "join", "room": room}
    if after is not None:
        frame["after"] = after
    start = len(sock.frames)
    await sock.send(frame)
    await sock.next_of("presence", room=room)
    return [f for f in sock.frames[start:] if f["type"] == "chat" and f["room"] == room]


async def say(sock: ChatSocket, room: str, text: str, cid: str | None = None) -> str:
    cid = cid or unique("c")
    await sock.send({"type": "chat", "room": room, "text": text, "cid": cid})
    ack = await sock.next_of("ack", cid=cid)
    return str(ack["id"])


async def test_two_instances_chat_both_ways(pinned: Pinned) -> None:
    room = unique("r")
    ann_name, bob_name = unique("ann"), unique("bob")
    _, ann = await pinned(ann_name, 1)
    _, bob = await pinned(bob_name, 2)
    await join(ann, room)
    await join(bob, room)

    first = await say(ann, room, "hello from 1")
    got = await bob.next_of("chat", room=room, id=first)
    assert got["user"] == ann_name and got["text"] == "hello from 1"
    assert isinstance(got["ts"], int | float) and got["ts"] > 1.6e9

    second = await say(bob, room, "hello from 2")
    back = await ann.next_of("chat", room=room, id=second)
    assert back["user"] == bob_name and back["text"] == "hello from 2"
    assert second > first


async def test_user_comes_from_session_not_frame(pinned: Pinned) -> None:
    room = unique("r")
    name = unique("ann")
    _, ann = await pinned(name, 1)
    await join(ann, room)
    await ann.send({"type": "chat", "room": room, "text": "hi", "cid": "x1", "user": "mallory"})
    ack = await ann.next_of("ack", cid="x1")
    mine = await ann.next_of("chat", room=room, id=ack["id"])
    assert mine["user"] == name


async def test_resend_with_same_cid_is_acked_once_published_once(pinned: Pinned) -> None:
    room = unique("r")
    _, ann = await pinned(unique("ann"), 1)
    _, bob = await pinned(unique("bob"), 2)
    await join(ann, room)
    await join(bob, room)
    first = await say(ann, room, "only once", cid="same-cid")
    again = await say(ann, room, "only once", cid="same-cid")
    assert again == first
    marker = await say(ann, room, "marker")
    await bob.next_of("chat", room=room, id=marker)
    texts = [f["text"] for f in bob.frames if f["type"] == "chat" and f["room"] == room]
    assert texts == ["only once", "marker"]


async def test_join_after_replays_exactly_what_was_missed(pinned: Pinned, stack: Stack) -> None:
    room = unique("r")
    ann_http, ann = await pinned(unique("ann"), 1)
    _, bob = await pinned(unique("bob"), 2)
    await join(ann, room)
    await join(bob, room)
    seen = await say(bob, room, "seen by ann")
    await ann.next_of("chat", room=room, id=seen)
    ann.close()

    missed = [await say(bob, room, f"missed {i}") for i in range(7)]
    back = await ChatSocket.connect(ann_http)
    await back.next_of("hello")
    replayed = await join(back, room, after=seen)
    assert [f["id"] for f in replayed] == missed
    assert [f["text"] for f in replayed] == [f"missed {i}" for i in range(7)]

    live = await say(bob, room, "live again")
    assert (await back.next_of("chat", room=room))["id"] == live
    back.close()


async def test_join_without_after_gets_last_50_in_order(pinned: Pinned) -> None:
    room = unique("r")
    ids = []
    for writer in range(6):  # 6 writers x 10: within each user's burst allowance
        _, sock = await pinned(unique(f"w{writer}"), 1 + writer % 2)
        await join(sock, room)
        ids += [await say(sock, room, f"w{writer} m{i}") for i in range(10)]
    _, reader = await pinned(unique("bob"), 2)
    replayed = await join(reader, room)
    assert [f["id"] for f in replayed] == ids[-50:]


async def test_rate_limit_is_per_user_across_instances_then_1008(pinned: Pinned) -> None:
    """A flood split over two instances still meets one bucket; keeping on closes 1008."""
    name = unique("spam")
    _, one = await pinned(name, 1)
    _, two = await pinned(name, 2)
    refusals = 0
    for i in range(12):
        for n, sock in enumerate((one, two)):
            await sock.send({"type": "chat", "room": "lobby", "text": "flood", "cid": f"f{n}-{i}"})
    for sock in (one, two):
        for _ in range(12):
            answer = await sock.next(lambda f: f["type"] in ("ack", "error"))
            refusals += answer["type"] == "error" and answer["code"] == "rate_limited"
    assert refusals >= 24 - 10 - 3  # burst of 10, plus the trickle refilled meanwhile
    # Sustained abuse on one socket: closed with 1008.
    for _ in range(40):
        await one.send_raw(json.dumps({"type": "chat", "room": "lobby", "text": "x"}))
    assert await one.closed() == 1008


async def test_lobby_resume_by_url(pinned: Pinned) -> None:
    """`/ws?after=ID` resumes the lobby without a second join."""
    ann_http, ann = await pinned(unique("ann"), 1)
    _, bob = await pinned(unique("bob"), 2)
    mark = await say(bob, "lobby", "mark")
    await ann.next_of("chat", room="lobby", id=mark)
    ann.close()
    missed = [await say(bob, "lobby", f"lobby {i}") for i in range(3)]
    back = await ChatSocket.connect(ann_http, path=f"/ws?after={mark}")
    await back.next_of("presence", room="lobby")
    got = [f["id"] for f in back.frames if f["type"] == "chat" and f["room"] == "lobby"]
    assert got == missed
    back.close()


async def test_joined_left_and_no_second_joined_on_reconnect(pinned: Pinned, stack: Stack) -> None:
    room = unique("r")
    watcher_name, ann_name = unique("wat"), unique("ann")
    _, watcher = await pinned(watcher_name, 1)
    await join(watcher, room)
    ann_http, ann = await pinned(ann_name, 2)
    await join(ann, room)
    await watcher.next_of("joined", room=room, user=ann_name)

    # The socket drops and comes back (on the other instance): no new `joined`.
    ann.close()
    ann_http.cookies["chatfleet_server"] = "chat1"
    again = await ChatSocket.connect(ann_http)
    await again.next_of("hello")
    await join(again, room)
    presence = [f for f in again.frames if f["type"] == "presence" and f["room"] == room]
    assert ann_name in presence[-1]["users"]
    marker = await say(again, room, "still here")
    await watcher.next_of("chat", room=room, id=marker)
    notices = [f for f in watcher.frames if f["type"] in ("joined", "left")
               and f["room"] == room and f["user"] == ann_name]
    assert [f["type"] for f in notices] == ["joined"]

    await again.send({"type": "leave", "room": room})
    await watcher.next_of("left", room=room, user=ann_name)
    again.close()


async def test_leave_stops_delivery(pinned: Pinned) -> None:
    room = unique("r")
    _, ann = await pinned(unique("ann"), 1)
    _, bob = await pinned(unique("bob"), 1)
    await join(ann, room)
    await join(bob, room)
    await ann.send({"type": "leave", "room": room})
    await ann.send({"type": "chat", "room": room, "text": "x", "cid": "after-leave"})
    refused = await ann.next_of("error")
    assert refused["code"] == "not_joined"
    await say(bob, room, "after ann left")
    lobby_mark = await say(bob, "lobby", "lobby mark")
    await ann.next_of("chat", room="lobby", id=lobby_mark)
    assert not [f for f in ann.frames if f["type"] == "chat" and f["room"] == room]


async def test_bad_frames_get_errors_and_socket_stays_open(pinned: Pinned) -> None:
    _, ann = await pinned(unique("ann"), 1)
    cases = [
        ("nonsense", "bad_frame"),
        ('{"type":"chat","room":"lobby"}', "bad_frame"),
        ('{"type":"join","room":"no spaces"}', "bad_room"),
        (json.dumps({"type": "chat", "room": "lobby", "text": "x" * 4001}), "too_large"),
        ('{"type":"chat","room":"elsewhere","text":"hi"}', "not_joined"),
    ]
    for raw, code in cases:
        await ann.send_raw(raw)
        error = await ann.next_of("error")
        assert error["code"] == code, raw[:40]
        assert error["reason"]
    await ann.send_raw(b"\x00binary")
    assert (await ann.next_of("error"))["code"] == "bad_frame"
    assert await say(ann, "lobby", "still works")


async def test_frame_over_16k_closes_1009(pinned: Pinned) -> None:
    _, ann = await pinned(unique("ann"), 1)
    await ann.send_raw("x" * (16 * 1024 + 1))
    assert await ann.closed() == 1009


async def test_logout_closes_sockets_on_every_instance(pinned: Pinned, stack: Stack) -> None:
    name = unique("ann")
    http, first = await pinned(name, 1)
    http.cookies["chatfleet_server"] = "chat2"
    second = await ChatSocket.connect(http)
    await second.next_of("hello")
    await http.logout()
    assert await first.closed() == 4401
    assert await second.closed() == 4401


async def expire_sessions_of(stack: Stack, name: str) -> int:
    """Delete the user's session keys, as an idle expiry would; how many went."""
    redis = Redis.from_url(stack.settings.effective_redis_url)
    deleted = 0
    async for key in redis.scan_iter(match="session:*", count=1000):
        data = await redis.get(key)
        if data is not None and msgpack.unpackb(data).get("user") == name:
            deleted += await redis.delete(key)
    await redis.aclose()
    return deleted


async def test_expired_session_closes_socket_on_next_join(pinned: Pinned, stack: Stack) -> None:
    """An idle-expired session (its key gone from Redis) ends its sockets with 4401."""
    name = unique("ann")
    http, sock = await pinned(name, 1)
    assert (await http.request("GET", "/session")).code == 200  # regenerated once more
    # Exactly the live session: the old ids are already gone.
    assert await expire_sessions_of(stack, name) == 1
    await sock.send({"type": "join", "room": unique("r")})
    assert await sock.closed() == 4401


async def test_periodic_check_closes_only_expired_sessions_sockets(stack: Stack) -> None:
    """With no frame from the user, the periodic check (batched over all logins)
    still ends the sockets of an expired session, and only those."""
    with lone_instance(stack, "--session-check-interval=1") as url:
        sockets, sessions = {}, []
        for name in (unique("gone"), unique("kept")):
            http = HttpSession(url)
            sessions.append(http)
            assert (await http.login(name)).code == 302
            sockets[name] = await ChatSocket.connect(http)
            await sockets[name].next_of("hello")
        gone, kept = sockets
        assert await expire_sessions_of(stack, gone) == 1
        assert await sockets[gone].closed() == 4401
        # A later check pass leaves the live login's socket open and working.
        await sockets[kept].send({"type": "join", "room": unique("r")})
        assert (await sockets[kept].next_of("joined"))["type"] == "joined"
        for sock in sockets.values():
            sock.close()
        for http in sessions:
            http.close()


async def test_history_pages_backwards_to_the_start(pinned: Pinned) -> None:
    room = unique("r")
    ids = []
    for writer in range(3):
        _, sock = await pinned(unique(f"h{writer}"), 1 + writer % 2)
        await join(sock, room)
        ids += [await say(sock, room, f"h{writer} {i}") for i in range(9)]
    _, reader = await pinned(unique("read"), 2)
    await join(reader, room)
    pages: list[str] = []
    before: str | None = None
    for _ in range(10):  # bounded: 27 messages in pages of 10
        request: dict[str, object] = {"type": "history", "room": room, "limit": 10}
        if before:
            request["before"] = before
        await reader.send(request)
        page = await reader.next_of("history", room=room)
        got = [m["id"] for m in page["messages"]]
        assert all(m["type"] == "chat" and m["room"] == room for m in page["messages"])
        pages = got + pages
        if not page["more"]:
            break
        before = got[0]
    assert pages == ids
    await reader.send({"type": "history", "room": unique("r")})
    assert (await reader.next_of("error"))["code"] == "not_joined"


async def test_typing_reaches_others_once_per_interval(pinned: Pinned) -> None:
    room = unique("r")
    ann_name = unique("ann")
    _, ann = await pinned(ann_name, 1)
    _, bob = await pinned(unique("bob"), 2)
    await join(ann, room)
    await join(bob, room)
    for _ in range(5):
        await ann.send({"type": "typing", "room": room})
    notice = await bob.next_of("typing", room=room)
    assert notice["user"] == ann_name
    marker = await say(ann, room, "after typing")
    await bob.next_of("chat", id=marker)
    await ann.next_of("chat", id=marker)
    assert len([f for f in bob.frames if f["type"] == "typing"]) == 1  # throttled
    assert not [f for f in ann.frames if f["type"] == "typing"]  # never to the typist


async def test_rooms_come_back_after_refresh(pinned: Pinned, stack: Stack) -> None:
    rooms = sorted(unique("r") for _ in range(2))
    http, sock = await pinned(unique("ann"), 1)
    for room in rooms:
        await join(sock, room)
    await sock.send({"type": "leave", "room": rooms[0]})
    marker = await say(sock, "lobby", "marker")
    await sock.next_of("chat", id=marker)
    sock.close()
    assert (await http.request("GET", "/")).code == 200  # a refresh: new session id
    http.cookies["chatfleet_server"] = "chat2"
    again = await ChatSocket.connect(http)
    hello = await again.next_of("hello")
    assert hello["rooms"] == [rooms[1]]
    again.close()


async def test_rooms_per_socket_limit(pinned: Pinned) -> None:
    _, sock = await pinned(unique("many"), 1)
    for _ in range(19):  # the lobby plus 19 more: the default 20
        await join(sock, unique("r"))
    await sock.send({"type": "join", "room": unique("r")})
    refused = await sock.next_of("error")
    assert refused["code"] == "bad_room" and "20 rooms" in refused["reason"]


async def test_sockets_per_user_limit(stack: Stack) -> None:
    http = HttpSession(f"http://127.0.0.1:{stack.settings.port_base + 1}")
    await http.login(unique("tabs"))
    socks = []
    for _ in range(20):  # the default allows 20 on one instance
        sock = await ChatSocket.connect(http)
        await sock.next_of("hello")
        socks.append(sock)
    extra = await ChatSocket.connect(http)
    assert await extra.closed() == 1008
    for sock in socks:
        sock.close()
    http.close()


async def test_the_ack_comes_before_the_senders_own_copy(pinned: Pinned) -> None:
    """A client can match its pending message to the stored one by the ack's
    id before that message shows up (ext: docs/protocol.md, `ack`)."""
    room = unique("r")
    _, ann = await pinned(unique("ann"), 1)
    _, bob = await pinned(unique("bob"), 2)
    await join(ann, room)
    await join(bob, room)
    cids = [unique("c") for _ in range(8)]  # within the burst of the rate limit
    for n, cid in enumerate(cids):
        await ann.send({"type": "chat", "room": room, "text": f"a{n}", "cid": cid})
        await bob.send({"type": "chat", "room": room, "text": f"b{n}"})
    acks = {cid: await ann.next_of("ack", cid=cid) for cid in cids}
    stored = {ack["id"] for ack in acks.values()}
    while stored - {f.get("id") for f in ann.frames if f["type"] == "chat"}:
        await ann.next()
    for cid, ack in acks.items():
        ack_at = ann.frames.index(ack)
        copy_at = next(i for i, f in enumerate(ann.frames)
                       if f["type"] == "chat" and f.get("id") == ack["id"])
        assert ack_at < copy_at, (cid, ack_at, copy_at)


async def test_a_socket_flooding_frames_is_closed_1008(pinned: Pinned) -> None:
    """Junk frames each cost an `error` reply: past the burst (200) and the
    rate (20 a second) the socket is closed for abuse. A burst under it, as a
    reconnect joining its rooms and resending its outbox makes, is answered."""
    _, ann = await pinned(unique("ann"), 1)
    for _ in range(150):
        await ann.send_raw("{}")
    for _ in range(150):
        assert (await ann.next_of("error"))["code"] == "bad_frame"
    assert await say(ann, "lobby", "a burst is fine")
    _, bob = await pinned(unique("bob"), 1)
    for _ in range(400):
        await bob.send_raw("{}")
    assert await bob.closed() == 1008
