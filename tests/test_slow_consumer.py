"""A client that stops reading is cut off; everyone else keeps getting every message.

Runs its own instance (same Redis as the stack) with a small slow-consumer
bound and no rate limit, so the flood that fills one socket's buffers is
quick to make.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
from collections.abc import Iterator

import pytest

from chatclient import ChatSocket, HttpSession
from stack.run import Stack
from tests.conftest import lone_instance, unique

BOUND = 64 * 1024
FLOOD = 1500  # x 4,000 characters: far past the bound and the kernel's buffers


@pytest.fixture
def slow_bound_instance(stack: Stack) -> Iterator[str]:
    with lone_instance(stack, f"--slow-consumer-bytes={BOUND}", "--rate-limit=0",
                       "--drain-wait=0", "--drain-spread=0") as url:
        yield url


def open_stalled_socket(port: int, cookie: str) -> socket.socket:
    """A WebSocket handshake by hand, then never a read: a stalled client."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    conn.sendall(
        (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
         f"Cookie: {cookie}\r\n\r\n").encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += conn.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    return conn


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


async def test_stalled_reader_is_cut_off_and_others_get_everything(
    slow_bound_instance: str,
) -> None:
    lone = slow_bound_instance
    port = int(lone.rsplit(":", 1)[1])
    room = "lobby"
    stalled_http = HttpSession(lone)
    await stalled_http.login(unique("slow"))
    stalled = await asyncio.to_thread(open_stalled_socket, port, stalled_http.cookie_header())

    reader_http = HttpSession(lone)
    await reader_http.login(unique("read"))
    reader = await ChatSocket.connect(reader_http)
    await reader.next_of("presence", room=room)
    writer_http = HttpSession(lone)
    await writer_http.login(unique("write"))
    writer = await ChatSocket.connect(writer_http)
    await writer.next_of("presence", room=room)

    text = "x" * 3999
    # The reader and the writer read while the flood goes on, as browsers do;
    # only the stalled socket does not.
    reader_got_last = asyncio.create_task(reader.next_of("chat", text=text + "!", timeout=90))
    writer_got_ack = asyncio.create_task(writer.next_of("ack", cid="fl-end", timeout=90))
    for i in range(FLOOD):
        await writer.send({"type": "chat", "room": room, "text": text, "cid": f"fl-{i}"})
    await writer.send({"type": "chat", "room": room, "text": text + "!", "cid": "fl-end"})
    await writer_got_ack
    await reader_got_last
    received = [f for f in reader.frames if f["type"] == "chat" and f["text"] == text]
    assert len(received) == FLOOD  # the stalled socket slowed nobody down or out

    stats = (await reader_http.request("GET", "/metrics")).body.decode()
    assert metric(stats, "chat_slow_consumers_total") >= 1
    # The stalled peer was disconnected by the server: its socket reads EOF
    # once the bytes already in flight are drained.
    stalled.settimeout(30)
    while stalled.recv(65536):
        pass
    stalled.close()
    for sock in (reader, writer):
        sock.close()
    for http in (stalled_http, reader_http, writer_http):
        http.close()
