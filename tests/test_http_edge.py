"""The HTTP edge: request body limits, /metrics at the front door, Server and security
headers on every answer, and whose forwarded headers an instance believes.

Raw sockets where the exact bytes matter (a body the server refuses half-way,
a chunked body, headers HAProxy must drop); the project's HttpSession for the
rest. Everything runs against the session's real stack (HAProxy, instances,
Redis); one test starts an HAProxy of its own, by pid, in front of nothing.
"""

from __future__ import annotations

import asyncio
import json
import selectors
import socket
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import tornado.web
from tornado.netutil import bind_sockets, bind_unix_socket

from chatclient import ChatSocket, HttpSession
from handlers.base import SECURITY_HEADERS
from handlers.edge import MAX_BODY_BYTES, front_door_server
from rigs.ports import free_port
from stack.front import FrontDoor
from stack.render import Server
from stack.run import Stack
from tests.conftest import lone_instance, unique

ANSWER_TIMEOUT = 20.0
# Far over any form, far under what once filled an instance's memory (90 MB each).
ONE_MIB = 1024 * 1024


# -- raw HTTP/1.1 ---------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None


def _parse_head(head: bytes) -> Answer:
    lines = head.decode("latin-1").split("\r\n")
    answer = Answer(int(lines[0].split(" ", 2)[1]))
    for line in lines[1:]:
        name, _, value = line.partition(":")
        answer.headers.setdefault(name.strip().lower(), []).append(value.strip())
    return answer


def read_answer(sock: socket.socket, buffered: bytes = b"",
                timeout: float = ANSWER_TIMEOUT) -> Answer | None:
    """One HTTP answer from `sock` (blocking); None if it closed (or reset) without one."""
    sock.settimeout(timeout)
    data = buffered
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None if not data else _parse_head(data)
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        answer = _parse_head(head)
        length = answer.header("content-length")
        while (len(body) < int(length)) if length is not None else True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except ConnectionResetError:
        return None if not data else _parse_head(data.partition(b"\r\n\r\n")[0])
    answer.body = body
    return answer


def exchange(port: int, head: bytes, body: bytes = b"", source: str = "127.0.0.1",
             host: str = "127.0.0.1") -> Answer | None:
    """Send one request on a new connection, the body only as far as the server takes
    it (a refusal may come, and the connection close, half-way), and read the answer;
    None if the connection was closed without one."""
    try:
        sock = socket.create_connection((host, port), timeout=ANSWER_TIMEOUT,
                                        source_address=(source, 0))
    except ConnectionResetError:
        return None  # accepted and closed at once (HAProxy's `tcp-request connection reject`)
    with sock:
        sock.setblocking(False)
        outgoing = head + body
        received = b""
        deadline = time.monotonic() + ANSWER_TIMEOUT
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while outgoing and b"\r\n\r\n" not in received and time.monotonic() < deadline:
                for _, events in sel.select(timeout=1.0):
                    try:
                        if events & selectors.EVENT_READ:
                            chunk = sock.recv(65536)
                            if not chunk:
                                outgoing = b""
                            received += chunk
                        if events & selectors.EVENT_WRITE and outgoing:
                            sent = sock.send(outgoing[:65536])
                            outgoing = outgoing[sent:]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except (BrokenPipeError, ConnectionResetError):
                        outgoing = b""  # refused half-way: what it answered is still readable
        sock.setblocking(True)
        return read_answer(sock, received)


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def new_cookies(answer: Answer) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for value in answer.headers.get("set-cookie", []):
        jar.load(value)
    return {name: morsel.value for name, morsel in jar.items()}


def assert_edge_headers(headers: dict[str, list[str]], where: str) -> None:
    """The security headers present, and no Server header (no software, no version)."""
    lower = {k.lower() for k in headers}
    for name in SECURITY_HEADERS:
        assert name.lower() in lower, f"{where}: no {name} in {sorted(lower)}"
    assert "server" not in lower, f"{where}: Server header sent"


def tornado_headers(answer: object) -> dict[str, list[str]]:
    headers = answer.headers  # type: ignore[attr-defined]
    return {name: headers.get_list(name) for name in headers}


# -- a user who can log in, in either auth mode --------------------------------------


async def account(http: HttpSession) -> dict[str, str]:
    """Form fields (with `_xsrf`) that log a fresh user in on this session's server.

    In `accounts` mode the user signs up first (docs/protocol.md: Accounts); in
    `open` mode (or before accounts existed) /signup is 404 and a name alone logs in.
    """
    name = unique("edge")
    password = f"pw-{uuid.uuid4().hex}"
    token = await http.xsrf()
    signup = HttpSession(http.base_url)
    signup.cookies["_xsrf"] = token
    made = await signup.request("POST", "/signup",
                                form={"user": name, "password": password, "_xsrf": token})
    signup.close()
    assert made.code in (302, 404), made.code
    return {"user": name, "password": password, "_xsrf": token}


def session_cookie(answer: object) -> str | None:
    headers = answer.headers  # type: ignore[attr-defined]
    return next((c for c in headers.get_list("Set-Cookie") if c.startswith("jsessionid=")), None)


# -- 1. request bodies ----------------------------------------------------------------


def test_a_large_body_gets_413_at_the_front_door(stack: Stack) -> None:
    head = request_head("POST", "/login", {
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(ONE_MIB)})
    answer = exchange(stack.settings.http_port, head, b"x" * ONE_MIB)
    assert answer is not None and answer.status == 413
    assert len(answer.body) < 1024 and b"Traceback" not in answer.body
    assert_edge_headers(answer.headers, "HAProxy 413")


def test_a_chunked_body_gets_411_at_the_front_door(stack: Stack) -> None:
    head = request_head("POST", "/login", {
        "Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked"})
    answer = exchange(stack.settings.http_port, head, b"6\r\nuser=a\r\n0\r\n\r\n")
    assert answer is not None and answer.status == 411
    assert_edge_headers(answer.headers, "HAProxy 411")


def test_a_body_at_the_limit_still_reaches_the_instance(stack: Stack) -> None:
    # Exactly the limit passes HAProxy: the instance answers (403: no XSRF token).
    head = request_head("POST", "/login", {
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(MAX_BODY_BYTES)})
    answer = exchange(stack.settings.http_port, head, b"x" * MAX_BODY_BYTES)
    assert answer is not None and answer.status == 403


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, ONE_MIB])
async def test_a_large_body_is_refused_by_the_instance_before_any_handler(
    instance_urls: list[str], direct: HttpSession, size: int
) -> None:
    """Directly on an instance's port: a login form padded past the limit logs nobody
    in (the same form, small, does: the handler would have run)."""
    fields = await account(direct)

    def login(pad: int) -> Answer | None:
        body = urllib.parse.urlencode({**fields, "pad": ""}).encode()
        body += b"x" * (pad - len(body))
        head = request_head("POST", "/login", {
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": str(len(body)), "Cookie": f"_xsrf={fields['_xsrf']}"})
        return exchange(port_of(instance_urls[0]), head, body)

    refused = await asyncio.to_thread(login, size)
    assert refused is None or refused.status in (400, 413)
    if refused is not None:
        assert "jsessionid" not in new_cookies(refused)
        assert b"Traceback" not in refused.body and len(refused.body) < 1024
    small = await asyncio.to_thread(login, 1024)
    assert small is not None and small.status == 302, small and small.status
    assert "jsessionid" in new_cookies(small)


async def test_the_websocket_upgrade_still_opens(stack: Stack, instance_urls: list[str]) -> None:
    for url in (stack.url, instance_urls[0]):
        http = HttpSession(url)
        fields = await account(http)
        assert (await http.request("POST", "/login", form=fields)).code == 302
        sock = await ChatSocket.connect(http)
        hello = await sock.next_of("hello")
        assert hello["user"] == fields["user"]
        sock.close()
        http.close()


# -- 11a. /metrics is closed at the front door ---------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/METRICS", "/Metrics", "/metrics/", "//metrics",
                                  "/%6detrics", "/%6Detrics", "/metrics?format=text",
                                  "/metrics#x", "/%2fmetrics"])
def test_metrics_is_not_served_at_the_front_door(stack: Stack, path: str) -> None:
    answer = exchange(stack.settings.http_port, request_head("GET", path))
    # 403/404 from the front door's rule, or from Tornado (no route); 400: HAProxy
    # refuses a raw "#" in a request line (with HAProxy 2.6's fixed page: haproxy.cfg).
    assert answer is not None and answer.status in (400, 403, 404), (path, answer.status)
    assert b"# TYPE" not in answer.body and b"chat_open_sockets" not in answer.body
    if answer.status != 400:
        assert_edge_headers(answer.headers, f"GET {path}")


def test_metrics_is_served_on_an_instances_own_port(instance_urls: list[str]) -> None:
    answer = exchange(port_of(instance_urls[0]), request_head("GET", "/metrics"))
    assert answer is not None and answer.status == 200
    assert b"# TYPE chat_open_sockets " in answer.body
    assert_edge_headers(answer.headers, "instance /metrics")


# -- 11b/c. no Server header; security headers on every answer ----------------------


INSTANCE_PATHS = [
    ("GET", "/", 200), ("GET", "/healthz", 200), ("GET", "/metrics", 200),
    ("GET", "/static/chat.css", 200), ("GET", "/static/nope.css", 404),
    ("GET", "/no/such/page", 404), ("GET", "/session", 401), ("GET", "/ws", 401),
    ("POST", "/login", 403), ("OPTIONS", "/", 405),
]


@pytest.mark.parametrize(("method", "path", "status"), INSTANCE_PATHS)
def test_every_instance_answer_has_the_edge_headers(
    instance_urls: list[str], method: str, path: str, status: int
) -> None:
    answer = exchange(port_of(instance_urls[0]), request_head(method, path))
    assert answer is not None and answer.status == status
    assert_edge_headers(answer.headers, f"instance {method} {path}")
    assert b"Traceback" not in answer.body


@pytest.mark.parametrize(("method", "path", "status"),
                         [p for p in INSTANCE_PATHS if p[1] != "/metrics"])
def test_every_front_door_answer_has_the_edge_headers(
    stack: Stack, method: str, path: str, status: int
) -> None:
    answer = exchange(stack.settings.http_port, request_head(method, path))
    assert answer is not None and answer.status == status
    assert_edge_headers(answer.headers, f"front {method} {path}")


async def test_a_static_file_revalidated_has_the_edge_headers(direct: HttpSession) -> None:
    first = await direct.request("GET", "/static/chat.css")
    again = await direct.request("GET", "/static/chat.css",
                                 headers={"If-None-Match": first.headers["Etag"]})
    assert again.code == 304
    assert_edge_headers(tornado_headers(again), "static 304")


async def test_the_websocket_handshake_has_no_server_header(direct: HttpSession) -> None:
    fields = await account(direct)
    await direct.request("POST", "/login", form=fields)
    sock = await ChatSocket.connect(direct)
    # The client keeps the 101's headers on its connection.
    headers = sock.conn.headers
    assert "Server" not in headers
    sock.close()


def test_haproxys_own_503_page_has_the_edge_headers(tmp_path: Path) -> None:
    """A front door whose only server is down answers its 503 page."""
    dead = Server("chat1", "127.0.0.1", free_port())  # nothing listens there
    door = FrontDoor(f"127.0.0.1:{free_port()}", [dead], tmp_path)
    door.start()
    try:
        door.wait_listening()
        door.wait_servers("DOWN", ["chat1"])
        answer = exchange(port_of(door.url), request_head("GET", "/"))
    finally:
        door.stop()
    assert answer is not None and answer.status == 503
    assert_edge_headers(answer.headers, "HAProxy 503")


@pytest.mark.parametrize("page", sorted((Path(__file__).parent.parent / "stack").glob("*.http")),
                         ids=lambda p: p.name)
def test_every_haproxy_error_file_has_the_edge_headers(page: Path) -> None:
    head = page.read_bytes().replace(b"\r\n", b"\n").partition(b"\n\n")[0]
    head = head.replace(b"\n", b"\r\n")
    assert_edge_headers(_parse_head(head).headers, page.name)


# -- 11d. forwarded headers ------------------------------------------------------------


FORGED = [{"X-Forwarded-Proto": "https"}, {"X-Scheme": "https"},
          {"X-Forwarded-Proto": "https", "X-Scheme": "https", "X-Forwarded-Ssl": "on"}]


@pytest.mark.parametrize("forged", FORGED)
async def test_forged_scheme_on_an_instances_port_gives_no_secure_cookie(
    stack: Stack, direct: HttpSession, forged: dict[str, str]
) -> None:
    # The stack's HAProxy reaches its instances over Unix sockets, so no TCP peer
    # is trusted here (a too-long state path would trust loopback instead).
    assert stack.settings.unix_socket_dir, "this stack's instances trust loopback"
    fields = await account(direct)
    answer = await direct.request("POST", "/login", form=fields, headers=forged)
    assert answer.code == 302
    cookie = session_cookie(answer)
    assert cookie is not None and "Secure" not in cookie


@pytest.mark.parametrize("forged", FORGED)
async def test_forged_scheme_through_the_front_door_gives_no_secure_cookie(
    front: HttpSession, forged: dict[str, str]
) -> None:
    fields = await account(front)
    answer = await front.request("POST", "/login", form=fields, headers=forged)
    assert answer.code == 302
    cookie = session_cookie(answer)
    assert cookie is not None and "Secure" not in cookie


async def test_a_trusted_front_door_saying_https_gives_a_secure_cookie(stack: Stack) -> None:
    """The other side: an instance told to trust 127.0.0.1 (as one whose front door
    reaches it over TCP) believes X-Forwarded-Proto, and only that."""
    with lone_instance(stack, "--trusted-proxies=127.0.0.1") as url:
        http = HttpSession(url)
        try:
            fields = await account(http)
            tls = await http.request("POST", "/login", form=fields,
                                     headers={"X-Forwarded-Proto": "https"})
            cookie = session_cookie(tls)
            assert tls.code == 302 and cookie is not None and "Secure" in cookie
            fields = await account(http)
            scheme = await http.request("POST", "/login", form=fields,
                                        headers={"X-Scheme": "https"})
            cookie = session_cookie(scheme)
            assert scheme.code == 302 and cookie is not None and "Secure" not in cookie
        finally:
            http.close()


class PeerHandler(tornado.web.RequestHandler):
    """Echoes the address and scheme the application sees."""

    def get(self) -> None:
        self.finish({"ip": self.request.remote_ip, "protocol": self.request.protocol})


class OkHandler(tornado.web.RequestHandler):
    """/healthz, for HAProxy's checks."""

    def get(self) -> None:
        self.finish("ok\n")


@asynccontextmanager
async def echo_server(trusted: list[str], unix_path: Path) -> AsyncIterator[int]:
    """PeerHandler behind the instances' own HTTP server, on TCP and a Unix socket."""
    app = tornado.web.Application([(r"/", PeerHandler), (r"/healthz", OkHandler)])
    server = front_door_server(app, trusted_proxies=trusted)
    port = free_port()
    server.add_sockets(bind_sockets(port, "127.0.0.1"))
    server.add_socket(bind_unix_socket(str(unix_path)))
    try:
        yield port
    finally:
        server.stop()
        await server.close_all_connections()


async def ask(port: int | None, unix_path: Path | None, headers: dict[str, str],
              repeat_plain: bool = False) -> list[dict[str, str]]:
    """GET / with `headers` (then, on the same connection, once without) -> what it saw."""
    if unix_path is not None:
        reader, writer = await asyncio.open_unix_connection(str(unix_path))
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    seen = []
    try:
        for extra in [headers, {}] if repeat_plain else [headers]:
            lines = ["GET / HTTP/1.1", "Host: x", *[f"{k}: {v}" for k, v in extra.items()]]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(_parse_head(head[:-4]).header("content-length") or 0)
            seen.append(json.loads(await reader.readexactly(length)))
    finally:
        writer.close()
    return seen


FORWARDED = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9", "X-Forwarded-Proto": "https"}
NEVER_TRUSTED = {"X-Real-IP": "192.0.2.1", "X-Scheme": "https"}


async def test_an_untrusted_tcp_peer_cannot_forge_its_address_or_scheme(tmp_path: Path) -> None:
    async with echo_server([], tmp_path / "e.sock") as port:
        for forged in (FORWARDED, NEVER_TRUSTED, {**FORWARDED, **NEVER_TRUSTED}):
            assert await ask(port, None, forged) == [{"ip": "127.0.0.1", "protocol": "http"}]


async def test_a_trusted_proxy_sets_address_and_scheme_but_never_by_x_real_ip_or_x_scheme(
    tmp_path: Path,
) -> None:
    async with echo_server(["127.0.0.1"], tmp_path / "e.sock") as port:
        # The last X-Forwarded-For entry is the one the front door added.
        assert await ask(port, None, FORWARDED, repeat_plain=True) == [
            {"ip": "203.0.113.9", "protocol": "https"},
            {"ip": "127.0.0.1", "protocol": "http"},  # the next request: its own again
        ]
        assert await ask(port, None, NEVER_TRUSTED) == [{"ip": "127.0.0.1", "protocol": "http"}]
        assert await ask(port, None, {"X-Forwarded-For": "not-an-address"}) == [
            {"ip": "127.0.0.1", "protocol": "http"}]


async def test_the_unix_socket_peer_is_the_front_door(tmp_path: Path) -> None:
    async with echo_server([], tmp_path / "e.sock"):
        seen = await ask(None, tmp_path / "e.sock", {**FORWARDED, **NEVER_TRUSTED},
                         repeat_plain=True)
        assert seen[0] == {"ip": "203.0.113.9", "protocol": "https"}
        assert seen[1]["protocol"] == "http" and seen[1]["ip"] != "203.0.113.9"


async def test_haproxy_drops_client_sent_forwarding_headers(tmp_path: Path) -> None:
    """A front door (rendered from haproxy.cfg) before the echo server: whatever the
    client claims, the app sees the client's real address and plain http."""
    sock_path = tmp_path / "e.sock"
    async with echo_server([], sock_path):
        door = FrontDoor(f"127.0.0.1:{free_port()}", [Server("chat1", "", 0, str(sock_path))],
                         tmp_path / "door")
        door.start()
        try:
            await asyncio.to_thread(door.wait_listening)
            await asyncio.to_thread(door.wait_servers, "UP", ["chat1"])
            headers = {**FORWARDED, **NEVER_TRUSTED, "X-Forwarded-Host": "evil.example",
                       "Forwarded": "for=192.0.2.60;proto=https"}
            answer = await asyncio.to_thread(
                exchange, port_of(door.url), request_head("GET", "/", headers),
                b"", "127.0.0.29")
        finally:
            await asyncio.to_thread(door.stop)
    assert answer is not None and answer.status == 200
    assert json.loads(answer.body) == {"ip": "127.0.0.29", "protocol": "http"}
