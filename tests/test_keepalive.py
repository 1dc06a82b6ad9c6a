"""Keep-alive pings: a live peer stays connected, a dead one is closed.

Runs its own instance pinging every second (`--ping-interval=1`). A client
that answers pings (Tornado's, as a browser does) stays open for many
intervals and still chats; a client that completed the handshake and then
went silent (never reads, never answers) is closed by the server.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from chatclient import ChatSocket, HttpSession
from stack.run import Stack
from tests.conftest import lone_instance, unique
from tests.test_slow_consumer import open_stalled_socket

INTERVAL = 1.0


@pytest.fixture
def pinging_instance(stack: Stack) -> Iterator[str]:
    with lone_instance(stack, f"--ping-interval={INTERVAL}", "--drain-wait=0",
                       "--drain-spread=0") as url:
        yield url


def read_until_closed(conn: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    conn.settimeout(timeout)
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked server frame (payloads < 64 KiB here)."""
    found = []
    while len(data) >= 2:
        opcode, size = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if size == 126:
            size, start = struct.unpack("!H", data[2:4])[0], 4
        found.append((opcode, data[start:start + size]))
        data = data[start + size:]
    return found


async def test_a_live_peer_stays_and_a_silent_one_is_closed(pinging_instance: str) -> None:
    port = int(pinging_instance.rsplit(":", 1)[1])
    live_http, silent_http = HttpSession(pinging_instance), HttpSession(pinging_instance)
    name = unique("live")
    await live_http.login(name)
    await silent_http.login(unique("silent"))
    live = await ChatSocket.connect(live_http)
    await live.next_of("presence", room="lobby")
    silent = await asyncio.to_thread(open_stalled_socket, port, silent_http.cookie_header())
    started = time.monotonic()

    # The silent peer gets pings, answers none, and is closed with 1001.
    data = await asyncio.to_thread(read_until_closed, silent, 30.0)
    silent.close()
    sent = frames(data)
    assert (0x9, b"") in sent, "no ping before the close"
    closes = [payload for opcode, payload in sent if opcode == 0x8]
    assert closes and struct.unpack("!H", closes[0][:2])[0] == 1001

    # Meanwhile the live peer, answering every ping, is still here and chats.
    assert time.monotonic() - started > 2 * INTERVAL
    await live.send({"type": "chat", "room": "lobby", "text": "still here", "cid": "k1"})
    assert (await live.next_of("chat", text="still here"))["user"] == name
    live.close()
    live_http.close()
    silent_http.close()
