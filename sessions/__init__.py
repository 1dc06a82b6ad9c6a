"""Sessions kept in Redis, keyed by the signed `jsessionid` cookie."""

from sessions.mixin import SESSION_COOKIE, SessionMixin
from sessions.store import DEFAULT_IDLE_TTL_SECONDS, SessionData, SessionStore

__all__ = [
    "DEFAULT_IDLE_TTL_SECONDS",
    "SESSION_COOKIE",
    "SessionData",
    "SessionMixin",
    "SessionStore",
]
