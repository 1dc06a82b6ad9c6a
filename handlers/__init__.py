"""HTTP and WebSocket handlers; they reach Redis only through `sessions` and `pubsub`."""

from __future__ import annotations

from typing import Any

from handlers.accounts import PasswordHandler, SignupHandler
from handlers.health import HealthHandler, MetricsHandler
from handlers.pages import LoginHandler, LogoutHandler, MainHandler, SessionHandler
from handlers.socket import ChatSocketHandler

ROUTES: list[tuple[str, Any]] = [
    (r"/", MainHandler),
    (r"/login", LoginHandler),
    (r"/signup", SignupHandler),
    (r"/password", PasswordHandler),
    (r"/logout", LogoutHandler),
    (r"/session", SessionHandler),
    (r"/healthz", HealthHandler),
    (r"/metrics", MetricsHandler),
    (r"/ws", ChatSocketHandler),
]

__all__ = ["ROUTES"]
