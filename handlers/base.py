"""What every HTTP handler shares: the session, security headers, short errors."""

from __future__ import annotations

import datetime
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any

import tornado.web
from redis.exceptions import OutOfMemoryError, RedisError

import metrics
from pubsub import ChatBus
from sessions import SessionMixin

if TYPE_CHECKING:  # the process owns the handlers' app; imported for types only
    from runtime.process import ChatProcess

log = logging.getLogger(__name__)

REDIS_FULL = metrics.counter(
    "chat_redis_oom_total", "Writes Redis refused for memory (maxmemory, noeviction)"
)

# No inline script or style, nothing from other origins, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

_MESSAGES = {
    400: "That request was not understood.",
    401: "Please log in first.",
    403: "That request was refused.",
    404: "There is nothing here.",
    405: "That method is not allowed here.",
    503: "Chat is briefly unavailable. Please try again in a moment.",
}


# On every answer of an instance (handlers/edge.py adds them to any that lacks
# them: 404s, static files, /healthz, /metrics) and of HAProxy (haproxy.cfg).
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def set_security_headers(handler: tornado.web.RequestHandler) -> None:
    for name, value in SECURITY_HEADERS.items():
        handler.set_header(name, value)


class BaseHandler(SessionMixin, tornado.web.RequestHandler):
    """Loads the session before each request; answers errors without internals."""

    def set_default_headers(self) -> None:
        set_security_headers(self)

    async def prepare(self) -> None:
        await self.load_session()

    def set_cookie(self, name: str, value: str | bytes, domain: str | None = None,
                   expires: float | tuple[int, ...] | datetime.datetime | None = None,
                   path: str = "/", expires_days: float | None = None, *,
                   secure: bool = False, **kwargs: Any) -> None:
        """Every cookie (the session's, Tornado's `_xsrf`) is `Secure` when the request
        came over HTTPS, as the front door reports it (handlers/edge.py): a browser
        then never sends it over plain HTTP, where anyone on the way could read it."""
        super().set_cookie(name, value, domain, expires, path, expires_days,
                           secure=secure or self.request.protocol == "https", **kwargs)

    @property
    def process(self) -> ChatProcess:
        process: ChatProcess = self.settings["process"]
        return process

    @property
    def bus(self) -> ChatBus:
        return self.process.bus

    @property
    def instance(self) -> str:
        return self.process.instance

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, tornado.web.HTTPError):
            return  # an answer we chose (400, 403 …), already in the access log
        if isinstance(value, OutOfMemoryError):
            REDIS_FULL.inc()
        if isinstance(value, RedisError | OSError):
            log.warning("Redis unavailable for %s %s: %s", self.request.method,
                        self.request.path, type(value).__name__)
            return
        # Method and path only: Tornado's default would log the whole request,
        # cookies (session ids) included.
        log.error("error in %s %s", self.request.method, self.request.path,
                  exc_info=(typ, value, tb) if typ and value else None)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], RedisError | OSError):
            status_code = 503
            self.set_status(503)
        message = _MESSAGES.get(status_code, "Something went wrong on our side.")
        if self.request.path == "/session" or "application/json" in self.request.headers.get(
            "Accept", ""
        ):
            self.finish({"error": message, "status": status_code})
            return
        self.render("error.html", status=status_code, message=message)
