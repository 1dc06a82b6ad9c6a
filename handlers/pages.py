"""The pages and the login, logout and session endpoints (PROTOCOL.md: HTTP)."""

from __future__ import annotations

import secrets

from handlers.base import BaseHandler
from handlers.names import NAME_RULE, is_valid_name

# A stable id for one login, kept across session id regenerations, so logout
# can close exactly this login's sockets on every instance.
LOGIN_ID_BYTES = 16


class MainHandler(BaseHandler):
    """GET /: the chat page when logged in (with a fresh session id), else the login page."""

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        user = self.session_user
        if user is None:
            # A stale cookie may only mean another tab of this browser gave the
            # session a new id a moment ago (every GET / does): the page asks
            # again with the browser's current cookie (static/login.js).
            self.render("login.html", error=None, name="", recheck=self.session_cookie_stale)
            return
        await self.regenerate_session()
        self.render("chat.html", user=user, instance=self.instance)


class LoginHandler(BaseHandler):
    """POST /login: check the name, start a fresh session, go to the chat."""

    async def post(self) -> None:
        name = self.get_body_argument("user", default="").strip()
        if not is_valid_name(name):
            self.set_status(400)
            self.render("login.html", error=f"A user name is {NAME_RULE}.", name=name[:64],
                        recheck=False)
            return
        login_id = secrets.token_urlsafe(LOGIN_ID_BYTES)
        await self.regenerate_session({"user": name, "login": login_id})
        self.redirect("/")


class LogoutHandler(BaseHandler):
    """POST /logout: end the session and close its sockets everywhere."""

    async def post(self) -> None:
        login_id = self.session.get("login")
        await self.destroy_session()
        if isinstance(login_id, str):
            await self.bus.end_login(login_id)
        self.redirect("/")


class SessionHandler(BaseHandler):
    """GET /session: who am I, on which instance; refreshes the cookies (the reconnect probe)."""

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        user = self.session_user
        if user is None:
            self.set_status(401)
            self.finish({"error": "not_logged_in"})
            return
        await self.regenerate_session()
        self.finish({"user": user, "instance": self.instance})
