"""Hostile input, round two: every cost an outsider can trigger has a bound (README: Bounds).

Each test replays one attack from the review against the real stack (or a
lone instance with a smaller bound, so the bound is reached quickly) and
checks the bound holds while an honest user is still served.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

from chatclient import ChatSocket, HttpSession
from pubsub.bus import REPLAY_MAX_MESSAGES
from pubsub.keys import Keys
from stack.run import Stack
from tests.conftest import free_port, lone_instance, unique, wait_for_port

# Four bytes in UTF-8 each: a 4,000-character message of these is 16 KB.
WIDE = "\U0001f600"


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[Redis]:
    client = Redis.from_url(stack.settings.effective_redis_url)
    yield client
    await client.aclose()


async def logged_in(url: str, user: str | None = None) -> tuple[HttpSession, ChatSocket]:
    http = HttpSession(url)
    assert (await http.login(user or unique("u"))).code == 302
    sock = await ChatSocket.connect(http)
    await sock.next_of("presence", room="lobby")
    return http, sock


async def fill(redis: Redis, room: str, count: int, text: str) -> None:
    """Store `count` messages in the room's stream directly (faster than the rate limit)."""
    stream = Keys().stream(room)
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(1, count + 1):
            pipe.xadd(stream, {"user": "filler", "text": text, "n": n})
        pipe.hset(Keys().room_meta(room), "seq", count)
        await pipe.execute()


def chats(sock: ChatSocket, room: str) -> list[dict[str, object]]:
    return [f for f in sock.frames if f.get("type") == "chat" and f.get("room") == room]


async def test_lone_surrogate_is_bad_frame_and_the_socket_stays(stack: Stack) -> None:
    http, sock = await logged_in(stack.url)
    await sock.send_raw('{"type":"chat","room":"lobby","text":"\\ud800","cid":"s1"}')
    refused = await sock.next_of("error")
    assert refused["code"] == "bad_frame"
    await sock.send({"type": "chat", "room": "lobby", "text": "still here", "cid": "s2"})
    await sock.next_of("ack", cid="s2")
    sock.close()
    http.close()


async def test_out_of_range_ids_are_bad_frame_not_unavailable(stack: Stack) -> None:
    http, sock = await logged_in(stack.url)
    for raw in ({"type": "join", "room": "lobby", "after": "18446744073709551616-0"},
                {"type": "history", "room": "lobby", "before": "1-18446744073709551616"}):
        await sock.send(raw)
        assert (await sock.next_of("error"))["code"] == "bad_frame"
    await sock.send({"type": "history", "room": "lobby", "before": "0-0"})
    assert (await sock.next_of("history"))["messages"] == []
    sock.close()
    http.close()


async def test_a_cid_belongs_to_its_sender(stack: Stack) -> None:
    """Another user's reuse of a cid is another message, not a silent drop."""
    room = unique("r")
    ann_http, ann = await logged_in(stack.url)
    bob_http, bob = await logged_in(stack.url)
    for sock in (ann, bob):
        await sock.send({"type": "join", "room": room})
        await sock.next_of("presence", room=room)
    await ann.send({"type": "chat", "room": room, "text": "ann's", "cid": "same"})
    ann_id = (await ann.next_of("ack", cid="same"))["id"]
    await bob.send({"type": "chat", "room": room, "text": "bob's", "cid": "same"})
    bob_id = (await bob.next_of("ack", cid="same"))["id"]
    assert bob_id != ann_id
    got = await ann.next_of("chat", room=room, id=bob_id)
    assert got["text"] == "bob's"
    for s, h in ((ann, ann_http), (bob, bob_http)):
        s.close()
        h.close()


async def test_long_history_reaches_an_honest_reader_whole(stack: Stack, redis: Redis) -> None:
    """50 messages of 16 KB (800 KB, over the 512 KiB slow-consumer bound) on join,
    then history pages of them: paced, never cut."""
    room = unique("r")
    await fill(redis, room, 120, WIDE * 4000)
    http, sock = await logged_in(stack.url)
    await sock.send({"type": "join", "room": room})
    await sock.next_of("presence", room=room, timeout=30)
    recent = chats(sock, room)
    assert len(recent) == 50
    oldest = str(recent[0]["id"])
    seen: list[object] = []
    more = True
    while more:
        await sock.send({"type": "history", "room": room, "before": oldest, "limit": 100})
        page = await sock.next_of("history", room=room, timeout=30)
        assert page["messages"], "a page with more to come is never empty"
        seen = [m["id"] for m in page["messages"]] + seen
        oldest = page["messages"][0]["id"]
        more = page["more"]
    assert len(seen) == 70 and len(set(seen)) == 70
    # Still open: it was never cut for bytes the server chose to send.
    await sock.send({"type": "chat", "room": room, "text": "read it all", "cid": "h1"})
    await sock.next_of("ack", cid="h1")
    sock.close()
    http.close()


async def test_replay_past_the_cap_is_reset_trimmed_then_recent(
    stack: Stack, redis: Redis
) -> None:
    room = unique("r")
    await fill(redis, room, REPLAY_MAX_MESSAGES + 50, "x")
    http, sock = await logged_in(stack.url)
    await sock.send({"type": "join", "room": room, "after": "0-0"})
    reset = await sock.next_of("reset", room=room)
    assert reset["reason"] == "trimmed"
    await sock.next_of("presence", room=room)
    assert len(chats(sock, room)) == 50
    # A gap within the cap is replayed whole, without reset.
    ids = [str(f["id"]) for f in chats(sock, room)]
    again = await ChatSocket.connect(http)
    await again.next_of("presence", room="lobby")
    await again.send({"type": "join", "room": room, "after": ids[0]})
    await again.next_of("presence", room=room)
    assert [f["id"] for f in chats(again, room)] == ids[1:]
    assert not [f for f in again.frames if f.get("type") == "reset"]
    for s in (sock, again):
        s.close()
    http.close()


async def test_joins_and_leaves_are_counted_per_user_across_instances(stack: Stack) -> None:
    """A join/leave loop (a presence flood) meets one allowance over both instances."""
    name = unique("flood")
    socks = []
    for n in (1, 2):
        http = HttpSession(stack.url)
        http.cookies["chatfleet_server"] = f"chat{n}"
        assert (await http.login(name)).code == 302
        sock = await ChatSocket.connect(http)
        await sock.next_of("presence", room="lobby")
        socks.append((http, sock))
    room = unique("r")
    refused = 0
    for i in range(50):
        sock = socks[i % 2][1]
        for kind in ("join", "leave"):
            await sock.send({"type": kind, "room": room})
        answer = await sock.next(lambda f: f.get("type") in ("presence", "error"))
        refused += answer["type"] == "error" and answer["code"] == "rate_limited"
    # 100 joins and leaves against a burst of 60 (plus about one a second).
    assert refused >= 10
    for http, sock in socks:
        sock.close()
        http.close()


async def test_new_rooms_per_user_per_day(stack: Stack) -> None:
    with lone_instance(stack, "--rooms-per-day=2") as url:
        http, sock = await logged_in(url)
        made = [unique("r") for _ in range(3)]
        for room in made[:2]:
            await sock.send({"type": "join", "room": room})
            await sock.next_of("presence", room=room)
        await sock.send({"type": "join", "room": made[2]})
        refused = await sock.next_of("error")
        assert refused["code"] == "rate_limited" and "2 new rooms a day" in refused["reason"]
        # Rooms that exist stay open to this user.
        await sock.send({"type": "leave", "room": made[0]})
        await sock.send({"type": "join", "room": made[0]})
        await sock.next_of("presence", room=made[0])
        sock.close()
        http.close()


async def test_room_keeps_at_most_its_byte_cap(stack: Stack, redis: Redis) -> None:
    cap = 64 * 1024
    with lone_instance(stack, f"--room-max-bytes={cap}", "--rate-limit=0") as url:
        http, sock = await logged_in(url)
        room = unique("r")
        await sock.send({"type": "join", "room": room})
        await sock.next_of("presence", room=room)
        for i in range(40):  # 40 x 4,000 bytes: 160 KB sent
            await sock.send({"type": "chat", "room": room, "text": "b" * 4000, "cid": f"b{i}"})
            await sock.next_of("ack", cid=f"b{i}")
        rows = await redis.xrange(Keys().stream(room))
        stored = sum(len(f[b"user"]) + len(f[b"text"]) for _, f in rows)
        assert stored <= cap and len(rows) >= 10
        assert int(await redis.hget(Keys().room_meta(room), "bytes")) == stored
        assert rows[-1][1][b"n"] == b"40"  # the newest stays; the oldest went first
        sock.close()
        http.close()


async def test_a_login_cannot_fill_its_users_other_devices_sockets(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.settings.port_base + 1}"
    name = unique("tabs")
    hog = HttpSession(url)
    await hog.login(name)
    held = []
    for _ in range(20):
        sock = await ChatSocket.connect(hog)
        await sock.next_of("hello")
        held.append(sock)
    other = HttpSession(url)
    await other.login(name)  # the same user on another device
    sock = await ChatSocket.connect(other)
    assert (await sock.next_of("hello"))["user"] == name
    for s in [*held, sock]:
        s.close()
    hog.close()
    other.close()


async def flood(sock: ChatSocket, frames: int) -> None:
    """Send up to `frames` chats; stop early if the server closes the socket."""
    for _ in range(frames):
        try:
            await sock.send_raw(json.dumps({"type": "chat", "room": "lobby", "text": "x"}))
        except (WebSocketClosedError, StreamClosedError):
            return


async def test_abuse_strikes_survive_a_reconnect(stack: Stack) -> None:
    http, sock = await logged_in(stack.url)
    await flood(sock, 45)
    assert await sock.closed() == 1008
    again = await ChatSocket.connect(http)
    await again.next_of("presence", room="lobby")
    # The record is the login's, in Redis: the next refusal closes at once.
    await flood(again, 3)
    assert await again.closed() == 1008
    http.close()


async def test_new_login_past_the_cap_ends_the_oldest(stack: Stack) -> None:
    with lone_instance(stack, "--max-logins-per-user=2") as url:
        name = unique("many")
        first_http, first = await logged_in(url, name)
        second_http, second = await logged_in(url, name)
        third_http, third = await logged_in(url, name)
        assert await first.closed() == 4401
        assert (await first_http.request("GET", "/session")).code == 401
        for http in (second_http, third_http):
            assert (await http.request("GET", "/session")).code == 200
        for s in (second, third):
            s.close()
        for h in (first_http, second_http, third_http):
            h.close()


async def test_logout_wins_every_race_with_a_session_probe(stack: Stack) -> None:
    """Once POST /logout has answered, no cookie of that session works again."""
    survived = 0
    for _ in range(40):
        http = HttpSession(stack.url)
        assert (await http.login(unique("race"))).code == 302
        token = http.cookies["_xsrf"]
        probe = HttpSession(stack.url)
        probe.cookies = dict(http.cookies)
        await asyncio.gather(
            http.request("POST", "/logout", form={"_xsrf": token}),
            probe.request("GET", "/session"),
        )
        for jar in (http, probe):
            if (await jar.request("GET", "/session")).code == 200:
                survived += 1
        http.close()
        probe.close()
    assert survived == 0


async def test_every_key_a_session_writes_expires(stack: Stack, redis: Redis) -> None:
    """Joins, chats, refusals, abandoned sockets, logins past the cap, logouts:
    afterwards every key the product wrote has an expiry (README: Bounds)."""
    prefix = unique("audit") + ":"
    with lone_instance(stack, f"--key-prefix={prefix}", "--max-logins-per-user=2") as url:
        name = unique("ann")
        sessions = [await logged_in(url, name) for _ in range(3)]  # one pushed out
        http, sock = sessions[-1]
        rooms = [unique("r") for _ in range(3)]
        for n, room in enumerate(rooms):
            await sock.send({"type": "join", "room": room})
            await sock.next_of("presence", room=room)
            await sock.send({"type": "chat", "room": room, "text": "hi", "cid": f"a{n}"})
            await sock.next_of("ack", cid=f"a{n}")
            await sock.send({"type": "typing", "room": room})
        await sock.send({"type": "leave", "room": rooms[0]})
        for _ in range(15):  # past the burst: refusals and strikes
            await sock.send_raw(json.dumps({"type": "chat", "room": "lobby", "text": "x"}))
        await sock.next_of("error")
        await sock.send({"type": "history", "room": rooms[1]})
        await sock.next_of("history")
        sock.close()  # abandoned: no leave for rooms[1] and rooms[2]
        bob_http, bob = await logged_in(url)
        await bob.send({"type": "join", "room": rooms[2]})
        await bob.next_of("presence", room=rooms[2])
        await bob_http.request("GET", "/session")
        assert (await bob_http.logout()).code == 302
        for h, _ in sessions:
            h.close()
        bob_http.close()
    keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
    assert len(keys) > 15, keys
    lasting = [k for k in keys if await redis.ttl(k) == -1]
    assert lasting == []


@pytest.fixture
def noeviction_port(tmp_path: Path) -> Iterator[int]:
    """A Redis of its own that refuses writes rather than evict, as the stack's does."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def test_redis_full_refuses_cleanly_and_recovers(
    stack: Stack, noeviction_port: int
) -> None:
    """maxmemory with noeviction: chat gets `unavailable` with nothing half-written,
    a login gets 503, the refusals are counted, and all works once there is room."""
    port = noeviction_port
    full = Redis(port=port)
    try:
        with lone_instance(stack, f"--redis-url=redis://127.0.0.1:{port}/0") as url:
            http, sock = await logged_in(url)
            room = unique("r")
            await sock.send({"type": "join", "room": room})
            await sock.next_of("presence", room=room)
            await sock.send({"type": "chat", "room": room, "text": "before", "cid": "m1"})
            await sock.next_of("ack", cid="m1")
            state_before = await full.xlen(Keys().stream(room))
            # Full: a limit below what Redis already holds (noeviction keeps it all).
            used = int((await full.info("memory"))["used_memory"])
            await full.config_set("maxmemory", str(used // 2))

            await sock.send({"type": "chat", "room": room, "text": "while full", "cid": "m2"})
            assert (await sock.next_of("error"))["code"] == "unavailable"
            assert await full.xlen(Keys().stream(room)) == state_before
            assert await full.hget(Keys().room_meta(room), "seq") == b"1"
            assert not await full.exists(Keys().dedupe(room, sock_user(sock), "m2"))
            newcomer = HttpSession(url)
            token = await newcomer.xsrf()
            answer = await newcomer.request("POST", "/login",
                                            form={"user": unique("late"), "_xsrf": token})
            assert answer.code == 503 and b"Traceback" not in answer.body
            metrics = (await newcomer.request("GET", "/metrics")).body.decode()
            oom = [line for line in metrics.splitlines()
                   if line.startswith("chat_redis_oom_total ")]
            assert oom and float(oom[0].split()[1]) >= 2  # the chat and the login

            await full.config_set("maxmemory", "0")
            await sock.send({"type": "chat", "room": room, "text": "while full", "cid": "m2"})
            await sock.next_of("ack", cid="m2")
            sock.close()
            http.close()
            newcomer.close()
    finally:
        await full.aclose()


def sock_user(sock: ChatSocket) -> str:
    return str(next(f for f in sock.frames if f.get("type") == "hello")["user"])


async def test_the_stacks_redis_is_bounded_and_never_evicts(stack: Stack, redis: Redis) -> None:
    config = await redis.config_get("maxmemory*")
    assert config["maxmemory-policy"] == "noeviction"
    assert int(config["maxmemory"]) == int(stack.settings.redis_maxmemory) > 0


async def test_history_requests_are_paced_per_socket(stack: Stack) -> None:
    http, sock = await logged_in(stack.url)
    answers = []
    for _ in range(30):
        await sock.send({"type": "history", "room": "lobby", "limit": 100})
        answers.append(await sock.next(lambda f: f.get("type") in ("history", "error")))
    refused = [a for a in answers if a["type"] == "error"]
    assert refused and all(a["code"] == "rate_limited" for a in refused)
    assert len(answers) - len(refused) >= 10  # the burst, then about two a second
    sock.close()
    http.close()


async def test_a_message_short_of_its_replicas_is_unconfirmed_not_unavailable(
    stack: Stack, redis: Redis
) -> None:
    """With CHAT_REDIS_WAIT_REPLICAS and no replica, the message is stored and
    published: the client is told so (`unconfirmed`), not `unavailable`."""
    with lone_instance(stack, "--redis-wait-replicas=1") as url:
        http, sock = await logged_in(url)
        room = unique("r")
        await sock.send({"type": "join", "room": room})
        await sock.next_of("presence", room=room)
        await sock.send({"type": "chat", "room": room, "text": "kept", "cid": "w1"})
        refused = await sock.next_of("error")
        assert refused["code"] == "unconfirmed"
        stored = await redis.xrange(Keys().stream(room))
        assert [fields[b"text"] for _, fields in stored] == [b"kept"]
        sock.close()
        http.close()
