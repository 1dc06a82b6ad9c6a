"""A light raw-asyncio HTTP/1.1 + WebSocket client for the idle and storm bench tools.

One TCP connection carries a client's login requests and then its WebSocket
upgrade (HTTP keep-alive), so K clients cost K connections and no TIME_WAIT
pile-up from logins. A connection is one `asyncio.Protocol` and a buffer:
the load side stays far lighter than the servers it measures. Connections
can leave from several 127.0.0.x source addresses, since one address has
only the ephemeral port range (about 28,000 ports) to connect from.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

# linux/in.h: pick the source port at connect() time (per 4-tuple), not at bind().
IP_BIND_ADDRESS_NO_PORT = 24

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA

# Every request and handshake gives up after this long.
REQUEST_TIMEOUT_SECONDS = 20.0

# A client frame must be masked (RFC 6455 5.3); an all-zero key makes masking
# a no-op, so sending costs no per-byte Python work. The server cannot tell.
ZERO_MASK = b"\x00\x00\x00\x00"


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class HttpError(Exception):
    """A request got an answer other than the one the caller needed."""

    def __init__(self, what: str, answer: Response) -> None:
        # Tornado names itself; HAProxy's own error pages do not.
        origin = "instance" if (answer.header("server") or "").startswith("Tornado") else "proxy"
        super().__init__(f"{what}: HTTP {answer.status} from {origin}")
        self.status = answer.status


@dataclass
class CookieJar:
    """The cookies one client holds: name -> value, sent back exactly as received."""

    values: dict[str, str] = field(default_factory=dict)

    def take(self, response: Response) -> None:
        for key, value in response.headers:
            if key == "set-cookie":
                name, _, rest = value.partition("=")
                self.values[name.strip()] = rest.split(";", 1)[0]

    def header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.values.items())


class Connection(asyncio.Protocol):
    """One client connection: HTTP requests in turn, then (after 101) WebSocket frames."""

    def __init__(self, on_text: Callable[[str], None] | None = None) -> None:
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.websocket = False
        self.close_code: int | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.websocket:
            self._parse_response()
        if self.websocket:
            self._parse_frames()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- HTTP --------------------------------------------------------------

    async def request(self, method: str, target: str, headers: dict[str, str],
                      body: bytes = b"", timeout: float = REQUEST_TIMEOUT_SECONDS) -> Response:
        """Send one request on this connection and wait for its answer."""
        assert self.transport is not None
        lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return await asyncio.wait_for(self._waiter, timeout)

    def _parse_response(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self._waiter is None:
            return
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = []
        for line in head[1:]:
            key, _, value = line.partition(":")
            headers.append((key.strip().lower(), value.strip()))
        length_text = dict(headers).get("content-length")
        # No length (HAProxy's 503 page, HTTP/1.0 + close): the caller only needs the status.
        length = int(length_text) if length_text and status != 101 else 0
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        if status == 101:
            self.websocket = True
        elif length_text is None:
            self.buffer.clear()
        waiter, self._waiter = self._waiter, None
        if not waiter.done():
            waiter.set_result(Response(status, headers, body))

    # -- WebSocket ---------------------------------------------------------

    def _parse_frames(self) -> None:
        buf = self.buffer
        start = 0
        while len(buf) - start >= 2:
            first, size = buf[start], buf[start + 1] & 0x7F
            at = start + 2
            if size == 126:
                if len(buf) - start < 4:
                    break
                size = int.from_bytes(buf[at:at + 2], "big")
                at += 2
            elif size == 127:
                if len(buf) - start < 10:
                    break
                size = int.from_bytes(buf[at:at + 8], "big")
                at += 8
            if len(buf) < at + size:
                break
            payload = bytes(buf[at:at + size])
            start = at + size
            self._on_frame(first & 0x0F, payload)
        del buf[:start]

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            if self.on_text is not None:
                self.on_text(payload.decode("utf-8"))
        elif opcode == OP_PING:
            self.send_frame(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.send_frame(OP_CLOSE, payload[:2])
            if self.transport is not None:
                self.transport.close()

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """Write one masked frame (FIN set); nothing if the connection is gone."""
        if self.transport is None or self.transport.is_closing():
            return
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        self.transport.write(header + ZERO_MASK + payload)

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode("utf-8"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int, source: str = "127.0.0.1",
                  on_text: Callable[[str], None] | None = None,
                  timeout: float = REQUEST_TIMEOUT_SECONDS) -> Connection:
    """Open a connection from `source` (any 127.0.0.x) to host:port."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
        _, protocol = await loop.create_connection(lambda: Connection(on_text), sock=sock)
    except BaseException:
        sock.close()
        raise
    return protocol


@dataclass
class ChatClient:
    """One chatfleet user agent: cookies, and one connection at a time (login, then /ws).

    `pin` names the instance to stick to (HAProxy's `chatfleet_server`
    cookie, e.g. "chat1"); empty when talking to an instance directly.
    """

    url: str
    source: str = "127.0.0.1"
    pin: str = ""
    jar: CookieJar = field(default_factory=CookieJar)
    conn: Connection | None = None

    def __post_init__(self) -> None:
        if self.pin:
            self.jar.values["chatfleet_server"] = self.pin

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urllib.parse.urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        host, port = self.host_port
        headers = {"Host": f"{host}:{port}", "Cookie": self.jar.header()}
        headers.update(extra or {})
        return headers

    async def open(self, on_text: Callable[[str], None] | None = None) -> Connection:
        """A fresh connection (the previous one, if any, is closed)."""
        if self.conn is not None:
            self.conn.close()
        host, port = self.host_port
        self.conn = await connect(host, port, self.source, on_text)
        return self.conn

    async def call(self, method: str, target: str, body: bytes = b"",
                   extra: dict[str, str] | None = None) -> Response:
        assert self.conn is not None
        answer = await self.conn.request(method, target, self._headers(extra), body)
        self.jar.take(answer)
        return answer

    async def login(self, user: str) -> None:
        """GET / for the XSRF cookie, then POST /login; raises HttpError unless 302."""
        await self.call("GET", "/")
        token = self.jar.values.get("_xsrf", "")
        form = urllib.parse.urlencode({"user": user, "_xsrf": token}).encode()
        answer = await self.call("POST", "/login", form,
                                 {"Content-Type": "application/x-www-form-urlencoded"})
        if answer.status != 302:
            raise HttpError("login", answer)

    async def probe(self) -> None:
        """GET /session, the reconnect probe (fresh cookies, re-pinned by HAProxy)."""
        answer = await self.call("GET", "/session")
        if answer.status != 200:
            raise HttpError("session", answer)

    async def upgrade(self, after: str | None = None) -> None:
        """Turn this connection into the chat WebSocket (`/ws?after=` resumes the lobby)."""
        target = "/ws" + (f"?after={urllib.parse.quote(after)}" if after else "")
        key = base64.b64encode(os.urandom(16)).decode()
        answer = await self.call("GET", target, extra={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": key, "Origin": self.url,
        })
        if answer.status != 101:
            raise HttpError("upgrade", answer)


def source_addresses(count: int) -> list[str]:
    """`count` loopback source addresses, 127.0.0.2 onwards (all of 127/8 is local)."""
    return [f"127.0.0.{2 + i}" for i in range(count)]
