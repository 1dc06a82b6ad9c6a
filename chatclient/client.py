"""HttpSession (cookies, login) and ChatSocket (JSON frames) over Tornado's clients."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.websocket import WebSocketClientConnection, websocket_connect

Frame = dict[str, Any]

DEFAULT_TIMEOUT = 20.0


class SocketClosed(Exception):
    """The server closed the WebSocket; `code` says why (docs/protocol.md close codes)."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


class HttpSession:
    """One browser's worth of cookies against one base URL."""

    def __init__(self, base_url: str, source_address: str | None = None,
                 ca_certs: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        # The local address to connect from (any of 127/8 on loopback): a client
        # address of its own, e.g. for the login throttle.
        self.source_address = source_address
        # For an https:// base_url: the CA file to verify the server by (None: the
        # system's), for this session's requests and sockets.
        self.ca_certs = ca_certs
        self.cookies: dict[str, str] = {}
        self.client = AsyncHTTPClient(force_instance=True)

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def _take_cookies(self, response: HTTPResponse) -> None:
        for header in response.headers.get_list("Set-Cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                expires = morsel["expires"]
                gone = morsel.value == "" or (expires and "1970" in expires)
                if gone or morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    async def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> HTTPResponse:
        """Send a request with this session's cookies; never follow redirects or raise on status."""
        all_headers = {"Cookie": self.cookie_header()} if self.cookies else {}
        all_headers.update(headers or {})
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            all_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        req = HTTPRequest(
            self.base_url + path, method=method, headers=all_headers, body=body,
            follow_redirects=False, request_timeout=timeout,
            network_interface=self.source_address, ca_certs=self.ca_certs,
        )
        try:
            response = await self.client.fetch(req, raise_error=False)
        except HTTPClientError as error:  # pragma: no cover - raise_error=False
            assert error.response is not None
            response = error.response
        self._take_cookies(response)
        return response

    async def xsrf(self) -> str:
        """The XSRF token, fetched from the login page if we have none yet."""
        if "_xsrf" not in self.cookies:
            await self.request("GET", "/")
        return self.cookies["_xsrf"]

    async def login(self, user: str, password: str | None = None) -> HTTPResponse:
        """POST /login: the name alone (open mode), or with its password (accounts)."""
        form = {"user": user, "_xsrf": await self.xsrf()}
        if password is not None:
            form["password"] = password
        return await self.request("POST", "/login", form=form)

    async def signup(self, user: str, password: str) -> HTTPResponse:
        form = {"user": user, "password": password, "_xsrf": await self.xsrf()}
        return await self.request("POST", "/signup", form=form)

    async def change_password(self, old: str, new: str) -> HTTPResponse:
        form = {"old": old, "new": new, "_xsrf": await self.xsrf()}
        return await self.request("POST", "/password", form=form)

    async def logout(self) -> HTTPResponse:
        token = await self.xsrf()
        return await self.request("POST", "/logout", form={"_xsrf": token})

    def close(self) -> None:
        self.client.close()


class ChatSocket:
    """A chat WebSocket that keeps every frame it received, in order."""

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self.frames: list[Frame] = []
        self._seen = 0  # frames before this index were already returned by `next`

    @classmethod
    async def connect(
        cls,
        http: HttpSession,
        path: str = "/ws",
        origin: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ChatSocket:
        url = "ws" + http.base_url.removeprefix("http") + path  # http: -> ws:, https: -> wss:
        headers = {"Cookie": http.cookie_header()}
        headers["Origin"] = origin if origin is not None else http.base_url
        req = HTTPRequest(url, headers=headers, request_timeout=timeout, connect_timeout=timeout,
                          ca_certs=http.ca_certs)
        conn = await websocket_connect(req)
        return cls(conn)

    async def send(self, frame: Frame) -> None:
        await self.conn.write_message(json.dumps(frame))

    async def send_raw(self, data: str | bytes) -> None:
        await self.conn.write_message(data, binary=isinstance(data, bytes))

    async def _read_one(self, deadline: float) -> Frame:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no frame in time")
        raw = await asyncio.wait_for(self.conn.read_message(), remaining)
        if raw is None:
            raise SocketClosed(self.conn.close_code, self.conn.close_reason)
        frame: Frame = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def next(
        self, match: Callable[[Frame], bool] | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> Frame:
        """The next frame not yet returned that satisfies `match` (reading more as needed)."""
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.frames):
                frame = self.frames[self._seen]
                self._seen += 1
                if match is None or match(frame):
                    return frame
            await self._read_one(deadline)

    async def next_of(self, kind: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> Frame:
        """The next frame of `kind` whose fields equal `fields`."""
        return await self.next(
            lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items()),
            timeout,
        )

    async def closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """Read until the server closes; return the close code."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                await self._read_one(deadline)
        except SocketClosed as closed:
            return closed.code

    def close(self) -> None:
        self.conn.close()
