"""Session handling for Tornado handlers: read once per request, write the cookie."""

from __future__ import annotations

from typing import TYPE_CHECKING

import tornado.web

from sessions.store import SessionData, SessionStore

SESSION_COOKIE = "jsessionid"

# In a session's data: a password proved the user (accounts mode). Sessions of
# the name-only login lack it, so an upgrade to accounts logs them out.
ACCOUNT_MARK = "account"

# How long a signed cookie stays acceptable to Tornado's signature check. The
# real lifetime is the session's sliding expiry in Redis; this only has to be
# longer than it.
COOKIE_SIGNATURE_MAX_AGE_DAYS = 31


if TYPE_CHECKING:
    _HandlerBase = tornado.web.RequestHandler
else:
    _HandlerBase = object


class SessionMixin(_HandlerBase):
    """Gives a handler `self.session`, loaded from Redis with one read.

    Mixed into RequestHandler and WebSocketHandler; expects the application
    setting `session_store`.
    """

    session_id: str | None = None
    session: SessionData = {}
    # The request carried a genuine (signed) cookie for a session that is gone:
    # expired, logged out elsewhere, or just given a new id by another tab.
    session_cookie_stale: bool = False
    # That cookie's session id (a logout still ends the login it belonged to).
    stale_session_id: str | None = None

    @property
    def session_store(self) -> SessionStore:
        store: SessionStore = self.application.settings["session_store"]
        return store

    async def load_session(self) -> None:
        """Read the session named by the cookie; a missing or forged one is empty."""
        self.session_id = None
        self.session = {}
        self.session_cookie_stale = False
        self.stale_session_id = None
        raw = self.get_signed_cookie(SESSION_COOKIE, max_age_days=COOKIE_SIGNATURE_MAX_AGE_DAYS)
        if not raw:
            return
        session_id = raw.decode("ascii", "replace")
        data = await self.session_store.get(session_id)
        if data is None:
            self.session_cookie_stale = True
            self.stale_session_id = session_id
            return
        self.session_id = session_id
        self.session = data

    @property
    def session_user(self) -> str | None:
        """The logged-in user; in accounts mode only a session a password
        started counts (one made by the name-only login is logged out)."""
        user = self.session.get("user")
        if not isinstance(user, str):
            return None
        if self.application.settings.get("accounts_only") and not self.session.get(ACCOUNT_MARK):
            return None
        return user

    async def regenerate_session(self, data: SessionData | None = None) -> bool:
        """Give the session a new id (keeping or replacing its data) and send the cookie.

        False when the session ended meanwhile (a logout, or another tab gave
        it a new id first): the request then counts as logged out, like a
        stale cookie, and no cookie is sent.
        """
        continues = data is None
        if data is not None:
            self.session = data
        new_id = await self.session_store.regenerate(self.session_id, self.session, continues)
        if new_id is None:
            self.session_id = None
            self.session = {}
            self.session_cookie_stale = True
            return False
        self.session_id = new_id
        self._send_session_cookie(self.session_id)
        return True

    async def destroy_session(self) -> None:
        if self.session_id:
            login_id = self.session.get("login")
            await self.session_store.destroy(
                self.session_id, login_id if isinstance(login_id, str) else None,
                self.session_user,
            )
        self.session_id = None
        self.session = {}
        self.clear_cookie(SESSION_COOKIE, path="/")

    def _send_session_cookie(self, session_id: str) -> None:
        secure = self.request.protocol == "https"
        self.set_signed_cookie(
            SESSION_COOKIE,
            session_id,
            expires_days=self.session_store.idle_ttl / 86400,
            httponly=True,
            samesite="Lax",
            secure=secure,
            path="/",
        )
