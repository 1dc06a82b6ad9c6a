"""Redis goes away under live users: clear 503s and `unavailable`, then recovery by itself."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from chatclient import ChatSocket, HttpSession
from stack.run import Stack
from tests.conftest import unique

WAIT = 30.0


@pytest.fixture
async def restored(stack: Stack) -> AsyncIterator[Stack]:
    yield stack
    await asyncio.to_thread(stack.ctl, "start", "redis")
    await asyncio.to_thread(stack.wait_ready)


async def wait_status(http: HttpSession, path: str, code: int) -> None:
    deadline = time.monotonic() + WAIT
    while (await http.request("GET", path, timeout=5)).code != code:
        assert time.monotonic() < deadline, f"{path} never answered {code}"
        await asyncio.sleep(0.1)


def chat_pids(stack: Stack) -> list[str]:
    return [stack.ctl("pid", f"chat:chat-{n}").strip() for n in (1, 2)]


async def test_redis_outage_gives_503_and_unavailable_then_recovers(restored: Stack) -> None:
    stack = restored
    direct = HttpSession(f"http://127.0.0.1:{stack.settings.port_base + 1}")
    await direct.login(unique("ann"))
    ann = await ChatSocket.connect(direct)
    await ann.next_of("presence", room="lobby")
    watcher_http = HttpSession(f"http://127.0.0.1:{stack.settings.port_base + 2}")
    await watcher_http.login(unique("wat"))
    watcher = await ChatSocket.connect(watcher_http)
    await watcher.next_of("presence", room="lobby")
    pids = chat_pids(stack)

    await asyncio.to_thread(stack.ctl, "stop", "redis")
    await wait_status(direct, "/healthz", 503)

    page = await direct.request("GET", "/")
    assert page.code == 503
    assert b"briefly unavailable" in page.body
    assert b"Traceback" not in page.body and b"redis" not in page.body.lower()
    probe = await direct.request("GET", "/session")
    assert probe.code == 503 and json.loads(probe.body)["status"] == 503
    # Through the front door: once HAProxy marks every instance down, its own
    # 503 page says the same thing.
    front = HttpSession(stack.url)
    await wait_status(front, "/", 503)
    await asyncio.to_thread(stack.wait_servers, "DOWN", ["chat1", "chat2"])
    page = await front.request("GET", "/")
    assert page.code == 503 and b"briefly unavailable" in page.body
    front.close()

    await ann.send({"type": "chat", "room": "lobby", "text": "during outage", "cid": "out-1"})
    refused = await ann.next_of("error", timeout=WAIT)
    assert refused["code"] == "unavailable"

    await asyncio.to_thread(stack.ctl, "start", "redis")
    await wait_status(direct, "/healthz", 200)
    await wait_status(watcher_http, "/healthz", 200)

    # The same socket, the same cid: stored once now, and everyone gets it.
    await ann.send({"type": "chat", "room": "lobby", "text": "during outage", "cid": "out-1"})
    ack = await ann.next_of("ack", cid="out-1", timeout=WAIT)
    got = await watcher.next_of("chat", room="lobby", id=ack["id"], timeout=WAIT)
    assert got["text"] == "during outage"
    assert (await direct.request("GET", "/session")).code == 200  # the session survived (AOF)
    assert chat_pids(stack) == pids  # nobody was restarted
    for sock in (ann, watcher):
        sock.close()
    for http in (direct, watcher_http):
        http.close()
