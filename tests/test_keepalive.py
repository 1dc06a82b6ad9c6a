"""Keep-alives: heartbeats between pings, a live peer stays connected, a dead one is closed.

Runs its own instance with a keep-alive every second, every third a ping
(`--ping-interval=1 --ping-every=3`). Both peers are raw sockets after a
real handshake: one answers every ping, as a browser does, and stays open;
the other went silent (never reads, never answers) and is closed by the
server with 1001. Between pings both get one-way heartbeats (empty pongs).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from chatclient import HttpSession
from stack.run import Stack
from tests.conftest import lone_instance, unique
from tests.test_slow_consumer import open_stalled_socket

INTERVAL = 1.0
PING_EVERY = 3


@pytest.fixture
def pinging_instance(stack: Stack) -> Iterator[str]:
    with lone_instance(stack, f"--ping-interval={INTERVAL}", f"--ping-every={PING_EVERY}",
                       "--drain-wait=0",
                       "--drain-spread=0") as url:
        yield url


def read_until_closed(conn: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    conn.settimeout(timeout)
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def split_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """(opcode, payload) of each whole unmasked server frame, and the partial rest.

    TCP may cut a frame anywhere, so an incomplete tail is kept for the next
    read rather than parsed (payloads are < 64 KiB here).
    """
    found = []
    while len(data) >= 2:
        opcode, size = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if size == 126:
            if len(data) < 4:
                break
            size, start = struct.unpack("!H", data[2:4])[0], 4
        if len(data) < start + size:
            break
        found.append((opcode, data[start:start + size]))
        data = data[start + size:]
    return found, data


def frames(data: bytes) -> list[tuple[int, bytes]]:
    return split_frames(data)[0]


def answer_pings(conn: socket.socket, stop: threading.Event) -> list[int]:
    """A live peer: reads every frame and answers each ping with a (masked) pong."""
    conn.settimeout(0.2)
    opcodes: list[int] = []
    buffer = b""
    while not stop.is_set():
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        found, buffer = split_frames(buffer + chunk)
        for opcode, _ in found:
            opcodes.append(opcode)
            if opcode == 0x9:
                conn.sendall(b"\x8a\x80" + os.urandom(4))  # empty pong, masked as clients must
    return opcodes


async def test_a_live_peer_stays_and_a_silent_one_is_closed(pinging_instance: str) -> None:
    port = int(pinging_instance.rsplit(":", 1)[1])
    live_http, silent_http = HttpSession(pinging_instance), HttpSession(pinging_instance)
    await live_http.login(unique("live"))
    await silent_http.login(unique("silent"))
    live = await asyncio.to_thread(open_stalled_socket, port, live_http.cookie_header())
    stop = threading.Event()
    answering = asyncio.create_task(asyncio.to_thread(answer_pings, live, stop))
    silent = await asyncio.to_thread(open_stalled_socket, port, silent_http.cookie_header())
    started = time.monotonic()

    # The silent peer gets heartbeats and pings, answers none, and is closed
    # with 1001 at its third ping: two went unanswered.
    data = await asyncio.to_thread(read_until_closed, silent, 60.0)
    silent.close()
    sent = frames(data)
    keepalives = [opcode for opcode, payload in sent if opcode in (0x9, 0xA) and payload == b""]
    assert keepalives[:PING_EVERY] == [0xA] * (PING_EVERY - 1) + [0x9], keepalives
    assert keepalives.count(0x9) == 2, keepalives
    closes = [payload for opcode, payload in sent if opcode == 0x8]
    assert closes and struct.unpack("!H", closes[0][:2])[0] == 1001
    assert time.monotonic() - started > 2 * PING_EVERY * INTERVAL

    # The live peer, answering every ping, was kept alive as often and is still open.
    stop.set()
    opcodes = await answering
    assert opcodes.count(0x9) >= 2
    assert opcodes.count(0xA) >= 2 * (PING_EVERY - 1)
    assert 0x8 not in opcodes, "the live peer was closed too"
    live.close()
    live_http.close()
    silent_http.close()
