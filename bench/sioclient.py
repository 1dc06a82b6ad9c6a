"""A Socket.IO client for the idle and storm tools, on bench/loadgen's raw WebSocket.

Engine.IO v4 over the websocket transport only, as bench/loadgen speaks it:
`0{..}` open, `40{"user":..}` connect with the name as auth, `40{"sid":..}`,
`2` ping answered `3`, `420["join",{"room":R}]` acknowledged as `430[..]`.
What this adds to loadgen's client: a connection from any 127.0.0.x source
address (bench/rawws.connect's socket), and a future that resolves on close.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.parse
from collections.abc import Callable

from bench.loadgen import WebSocket, upgrade_request
from bench.rawws import IP_BIND_ADDRESS_NO_PORT, REQUEST_TIMEOUT_SECONDS

SIO_PATH = "/socket.io/?EIO=4&transport=websocket"
EIO_PING = b"2"
EIO_PONG = b"3"


class SioSocket(WebSocket):
    """loadgen's WebSocket plus Engine.IO pings, a setup inbox and a close future."""

    def __init__(self, request: bytes, on_event: Callable[[bytes], None]) -> None:
        super().__init__(request, self._on_payload)
        self.on_event = on_event
        self.inbox: asyncio.Queue[bytes] | None = asyncio.Queue()
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _on_payload(self, payload: bytes) -> None:
        if payload == EIO_PING:
            self.send(EIO_PONG)
        elif self.inbox is not None:
            self.inbox.put_nowait(payload)
        else:
            self.on_event(payload)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.gone.done():
            self.gone.set_result(None)

    async def expect(self, prefix: bytes) -> bytes:
        """The next setup message starting with `prefix` (others are dropped)."""
        assert self.inbox is not None
        while True:
            payload = await self.inbox.get()
            if payload.startswith(prefix):
                return payload

    async def join(self, user: str, room: str) -> None:
        """Socket.IO connect as `user`, then join `room`; later messages go to `on_event`."""
        await self.expect(b"0{")
        self.send(b"40" + json.dumps({"user": user}).encode())
        await self.expect(b"40")
        self.send(b"420" + json.dumps(["join", {"room": room}]).encode())
        answer = await self.expect(b"430")
        if json.loads(answer[3:]) == [None]:
            raise ConnectionError("join refused")
        self.inbox = None


async def open_sio(url: str, user: str, room: str, on_event: Callable[[bytes], None],
                   source: str = "127.0.0.1",
                   timeout: float = REQUEST_TIMEOUT_SECONDS) -> SioSocket:
    """Connect from `source` to `url`, upgrade, connect as `user` and join `room`."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = upgrade_request(parts.netloc, SIO_PATH, {})
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    _, ws = await loop.create_connection(lambda: SioSocket(request, on_event), sock=sock)
    try:
        await asyncio.wait_for(ws.opened, timeout)
        await asyncio.wait_for(ws.join(user, room), timeout)
    except BaseException:
        ws.close()
        raise
    return ws
