"""Losing an instance under a connected user: planned restart (1012) and kill -9.

Both run on the session's stack and leave it whole again (all instances UP).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator

import pytest

from chatclient import ChatSocket, HttpSession
from stack.run import Stack
from tests.conftest import unique


@pytest.fixture
async def restored(stack: Stack) -> AsyncIterator[Stack]:
    yield stack
    await asyncio.to_thread(stack.wait_ready)


async def pinned_socket(stack: Stack, user: str, n: int) -> tuple[HttpSession, ChatSocket]:
    http = HttpSession(stack.url)
    http.cookies["chatfleet_server"] = f"chat{n}"
    await http.login(user)
    sock = await ChatSocket.connect(http)
    await sock.next_of("presence", room="lobby")
    return http, sock


async def resume(http: HttpSession, room: str, after: str) -> tuple[ChatSocket, list[str]]:
    """What the browser does after losing its socket: probe, reopen, rejoin from `after`."""
    probe = await http.request("GET", "/session")
    assert probe.code == 200, probe.code
    sock = await ChatSocket.connect(http)
    await sock.next_of("hello")
    await sock.send({"type": "join", "room": room, "after": after})
    await sock.next_of("presence", room=room)
    replayed = [f["id"] for f in sock.frames if f["type"] == "chat" and f["room"] == room]
    return sock, replayed


async def chat_with_ack(sock: ChatSocket, room: str, text: str) -> str:
    cid = unique("c")
    await sock.send({"type": "chat", "room": room, "text": text, "cid": cid})
    return str((await sock.next_of("ack", cid=cid))["id"])


async def lose_instance_one(restored: Stack, how: str) -> None:
    room = unique("r")
    ann_http, ann = await pinned_socket(restored, unique("ann"), 1)
    bob_http, bob = await pinned_socket(restored, unique("bob"), 2)
    for sock in (ann, bob):
        await sock.send({"type": "join", "room": room})
        await sock.next_of("presence", room=room)
    last = await chat_with_ack(bob, room, "before")
    await ann.next_of("chat", room=room, id=last)

    if how == "restart":
        restart = asyncio.create_task(asyncio.to_thread(restored.ctl, "restart", "chat:chat-1"))
        code = await ann.closed(timeout=30)
        assert code == 1012  # drained on purpose, not dropped
    else:
        pid = int(restored.ctl("pid", "chat:chat-1").strip())
        os.kill(pid, signal.SIGKILL)
        code = await ann.closed(timeout=30)
        assert code != 1012

    missed = [await chat_with_ack(bob, room, f"while away {i}") for i in range(5)]
    back, replayed = await resume(ann_http, room, after=last)
    assert replayed == missed  # exactly what was missed: no gap, no repeat
    instance = json.loads((await ann_http.request("GET", "/session")).body)["instance"]
    assert instance.endswith(f":{restored.settings.port_base + 2}") or how == "restart"

    live = await chat_with_ack(back, room, "back")
    assert (await bob.next_of("chat", room=room, id=live))["text"] == "back"
    if how == "restart":
        await restart
    for sock in (back, bob):
        sock.close()
    for http in (ann_http, bob_http):
        http.close()


async def test_planned_restart_drains_with_1012_and_user_resumes(restored: Stack) -> None:
    await lose_instance_one(restored, "restart")


async def test_kill_9_user_resumes_on_the_other_instance(restored: Stack) -> None:
    await lose_instance_one(restored, "kill")


async def test_healthz_turns_503_while_draining(restored: Stack) -> None:
    probe = HttpSession(f"http://127.0.0.1:{restored.settings.port_base + 1}")
    assert (await probe.request("GET", "/healthz")).code == 200
    stop = asyncio.create_task(asyncio.to_thread(restored.ctl, "restart", "chat:chat-1"))
    seen = set()
    for _ in range(200):  # bounded: about 20 s
        answer = await probe.request("GET", "/healthz", timeout=2)
        seen.add(answer.code)
        if answer.code == 503:
            break
        await asyncio.sleep(0.1)
    assert 503 in seen
    await stop
    probe.close()
