"""An instance's HTTP edge: how large a request may be, whose forwarded headers count,
and what every answer carries (README: Security).

    server = front_door_server(app, trusted_proxies=["10.0.0.1"])
    server.listen(8001)
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Iterable
from typing import Any

import tornado.web
from tornado import httputil, netutil
from tornado.httpserver import HTTPServer

from handlers.base import SECURITY_HEADERS

# Every request body an instance takes is a small form (login, signup, password,
# logout: a name, two passwords of at most 128 characters, the XSRF token).
# Tornado's default (100 MB) let eight anonymous 90 MB POSTs take one process
# from 209 MB to 1.75 GB. WebSocket frames are not request bodies: they have a
# limit of their own (--max-frame-bytes). HAProxy refuses larger bodies first
# (haproxy.cfg renders the same number).
MAX_BODY_BYTES = 8 * 1024


def trusted_addresses(spec: str) -> frozenset[str]:
    """"10.0.0.1, 10.0.0.2" -> the addresses (--trusted-proxies, CHAT_TRUSTED_PROXIES)."""
    return frozenset(item.strip() for item in spec.split(",") if item.strip())


def forwarded_peer(headers: httputil.HTTPHeaders, remote_ip: str, protocol: str) -> tuple[str, str]:
    """The client's address and scheme as the front door reports them; the peer's own
    where it reports none. Only X-Forwarded-For (its last entry: the one the front
    door added) and X-Forwarded-Proto; X-Real-IP and X-Scheme are never read."""
    ip = headers.get("X-Forwarded-For", "").split(",")[-1].strip()
    scheme = headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
    return (ip if netutil.is_valid_ip(ip) else remote_ip,
            scheme if scheme in ("http", "https") else protocol)


class _FrontDoorHeaders(httputil.HTTPMessageDelegate):
    """One request: if its connection is from the front door, the address and scheme
    the front door reports become the request's (`request.remote_ip`, `.protocol`).

    Tornado builds the request from its connection's context when the headers
    arrive, so the context is rewritten just before, and restored when the request
    ends (the next one on a kept-alive connection starts from the peer again),
    as Tornado's own `xheaders=True` does, minus its trust in everyone.
    """

    def __init__(self, delegate: httputil.HTTPMessageDelegate,
                 request_conn: httputil.HTTPConnection, trusted: frozenset[str]) -> None:
        self.delegate = delegate
        # Tornado's per-connection context (remote_ip, protocol, address_family).
        self.context: Any = getattr(request_conn, "context", None)
        self.trusted = trusted
        self.saved: tuple[str, str] | None = None

    def _from_front_door(self) -> bool:
        # HAProxy on this host comes over the Unix socket (Tornado reports such a
        # peer as "0.0.0.0"); a front door elsewhere from an address we were given.
        family = getattr(self.context, "address_family", None)
        return family == socket.AF_UNIX or getattr(self.context, "remote_ip", None) in self.trusted

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        if self.context is not None and self._from_front_door():
            ip, protocol = self.context.remote_ip, self.context.protocol
            self.saved = (ip, protocol)
            self.context.remote_ip, self.context.protocol = forwarded_peer(headers, ip, protocol)
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.delegate.finish()
        self._restore()

    def on_connection_close(self) -> None:
        self.delegate.on_connection_close()
        self._restore()

    def _restore(self) -> None:
        if self.saved is not None:
            self.context.remote_ip, self.context.protocol = self.saved
            self.saved = None


class _FrontDoorTrust(httputil.HTTPServerConnectionDelegate):
    """The application, with each request passed through `_FrontDoorHeaders`."""

    def __init__(self, app: tornado.web.Application, trusted: frozenset[str]) -> None:
        self.app = app
        self.trusted = trusted

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _FrontDoorHeaders(self.app.start_request(server_conn, request_conn),
                                 request_conn, self.trusted)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)


def front_door_server(app: tornado.web.Application, trusted_proxies: Iterable[str] = (),
                      max_body_size: int = MAX_BODY_BYTES) -> HTTPServer:
    """The instance's HTTP server: bodies up to `max_body_size` (larger: a bare 400 and
    the connection closed, before any handler runs), and forwarded headers believed
    only from the front door: the Unix socket, or a peer in `trusted_proxies`.

    Tornado's `xheaders=True` would take X-Forwarded-For, X-Real-IP, X-Scheme and
    X-Forwarded-Proto from anyone who can reach the port.
    """
    return HTTPServer(_FrontDoorTrust(app, frozenset(trusted_proxies)), xheaders=False,
                      max_body_size=max_body_size)


class EdgeHeaders(tornado.web.OutputTransform):
    """On every answer a handler sends (pages, errors, Tornado's own 404, static files,
    /healthz, /metrics, the WebSocket handshake): the security headers, where the
    handler set none of its own, and no `Server` header (software and version)."""

    def transform_first_chunk(
        self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        headers.pop("Server", None)
        for name, value in SECURITY_HEADERS.items():
            if name not in headers:
                headers[name] = value
        return status_code, headers, chunk
