"""The pages and the login, logout and session endpoints (docs/protocol.md: HTTP)."""

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
        if not await self.regenerate_session():
            # Logged out, or another tab moved the session a moment ago.
            self.render("login.html", error=None, name="", recheck=True)
            return
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
        # Past the user's cap of logins the oldest end, everywhere.
        for pushed_out in await self.session_store.add_login(name, login_id):
            await self.session_store.end_login(name, pushed_out)
            await self.bus.end_login(pushed_out)
        self.redirect("/")


class LogoutHandler(BaseHandler):
    """POST /logout: end the session and close its sockets everywhere."""

    async def post(self) -> None:
        login_id = self.session.get("login")
        if not isinstance(login_id, str) and self.stale_session_id:
            # The cookie's id was replaced a moment ago (a page load or probe
            # raced this logout): end the login it belonged to all the same.
            login_id = await self.session_store.login_of_replaced(self.stale_session_id)
            if login_id:
                await self.session_store.end_login(None, login_id)
        await self.destroy_session()
        if isinstance(login_id, str):
            await self.bus.end_login(login_id)
        self.redirect("/")


class SessionHandler(BaseHandler):
    """GET /session: who am I, on which instance; refreshes the cookies (the reconnect probe)."""

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        user = self.session_user
        if user is None or not await self.regenerate_session():
            self.set_status(401)
            self.finish({"error": "not_logged_in"})
            return
        self.finish({"user": user, "instance": self.instance})
