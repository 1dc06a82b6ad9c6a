"""What a user does, for the tests that take Redis or whole hosts away (multi-host, Sentinel).

A user is pinned to one chat process by HAProxy's cookie, joins rooms,
resends a refused message with the same `cid` (as static/chat/connection.js does on
`unavailable`), and after losing the socket probes `/session`, reopens and
rejoins with `after` = the last id it saw.
"""

from __future__ import annotations

import asyncio
import json
import time

from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketError

from chatclient import ChatSocket, HttpSession
from chatclient.client import SocketClosed
from tests.conftest import unique

# A Redis failover or a cut-off host takes seconds; a user keeps trying this long.
PATIENCE_SECONDS = 60.0
RESEND_PAUSE_SECONDS = 0.3


def id_key(message_id: str) -> tuple[int, int]:
    """Message ids are stream ids, "ms-seq": compare them as numbers."""
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq or 0)


def chat_ids(sock: ChatSocket, room: str) -> list[str]:
    """Every chat id this socket received in `room`, in arrival order."""
    return [f["id"] for f in sock.frames if f.get("type") == "chat" and f.get("room") == room]


async def pinned_user(front_url: str, server: str, user: str) -> tuple[HttpSession, ChatSocket]:
    """A logged-in user whose HAProxy cookie pins it to `server` (chat1, chat2, ...)."""
    http = HttpSession(front_url)
    http.cookies["chatfleet_server"] = server
    assert (await http.login(user)).code == 302
    sock = await ChatSocket.connect(http)
    await sock.next_of("presence", room="lobby")
    return http, sock


async def instance_of(http: HttpSession) -> str:
    """The chat process serving this user now ("hostname:port")."""
    answer = await http.request("GET", "/session")
    assert answer.code == 200, answer.code
    return str(json.loads(answer.body)["instance"])


async def join(sock: ChatSocket, room: str, after: str | None = None) -> list[str]:
    """Join `room` (from `after` if given); the ids replayed before its presence frame."""
    already = len(chat_ids(sock, room))
    frame: dict[str, str] = {"type": "join", "room": room}
    if after is not None:
        frame["after"] = after
    await sock.send(frame)
    await sock.next_of("presence", room=room)
    return chat_ids(sock, room)[already:]


async def say(sock: ChatSocket, room: str, text: str, cid: str | None = None,
              patience: float = PATIENCE_SECONDS) -> str:
    """Send until acknowledged, resending with the same cid on `unavailable`; the id."""
    cid = cid or unique("c")
    deadline = time.monotonic() + patience
    while True:
        await sock.send({"type": "chat", "room": room, "text": text, "cid": cid})
        answer = await sock.next(
            lambda f: (f.get("type") == "ack" and f.get("cid") == cid)
            or (f.get("type") == "error" and f.get("code") == "unavailable"),
            timeout=max(0.1, deadline - time.monotonic()),
        )
        if answer["type"] == "ack":
            return str(answer["id"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"{cid} never acknowledged")
        await asyncio.sleep(RESEND_PAUSE_SECONDS)


async def resume(http: HttpSession, room: str, after: str,
                 patience: float = PATIENCE_SECONDS) -> tuple[ChatSocket, list[str]]:
    """What the browser does after losing its socket: probe, reopen, rejoin from `after`.

    Retried (with a pause) while the front door still answers 503 or the
    socket cannot open, as the browser's reconnect loop does.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            probe = await http.request("GET", "/session")
            if probe.code == 200:
                sock = await ChatSocket.connect(http)
                await sock.next_of("hello")
                return sock, await join(sock, room, after)
        except (OSError, TimeoutError, HTTPClientError, WebSocketError, SocketClosed) as error:
            last: object = error
        else:
            last = probe.code
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not resume: {last}")
        await asyncio.sleep(RESEND_PAUSE_SECONDS)
