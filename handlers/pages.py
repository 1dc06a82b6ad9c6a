"""The pages and the login, logout and session endpoints (docs/protocol.md: HTTP)."""

from __future__ import annotations

import secrets

from accounts import Accounts, Busy, Throttled
from accounts.throttle import minutes
from handlers.base import BaseHandler
from metrics.latency import LOGIN_SECONDS
from rooms.names import NAME_RULE, is_valid_name
from sessions.mixin import ACCOUNT_MARK

# A stable id for one login, kept across session id regenerations, so logout
# can close exactly this login's sockets on every instance.
LOGIN_ID_BYTES = 16

WRONG_PASSWORD = "That name and password do not match an account."
BUSY = "Too many logins at once. Please try again in a moment."
BUSY_RETRY_SECONDS = 2


class PageHandler(BaseHandler):
    """What the login, signup and password pages share."""

    @property
    def accounts_mode(self) -> bool:
        return self.process.accounts is not None

    def login_page(self, status: int = 200, error: str | None = None, form: str = "login",
                   name: str = "", recheck: bool = False, fault: str | None = None) -> None:
        """`form`: which form the error is about; `fault`: which field of it."""
        self.set_status(status)
        self.render("login.html", error=error, form=form, name=name[:64], recheck=recheck,
                    accounts=self.accounts_mode, fault=fault)

    def too_many(self, retry_after: int, page: str = "login", name: str = "",
                  form: str = "login") -> None:
        self.set_header("Retry-After", str(retry_after))
        wait = minutes(retry_after)
        error = f"Too many tries. Please try again in {wait} minute{'s' if wait > 1 else ''}."
        if page == "password":
            self.password_page(429, error)
        else:
            self.login_page(429, error, form=form, name=name)

    def busy(self, page: str = "login", name: str = "", form: str = "login") -> None:
        self.set_header("Retry-After", str(BUSY_RETRY_SECONDS))
        if page == "password":
            self.password_page(503, BUSY)
        else:
            self.login_page(503, BUSY, form=form, name=name)

    def password_page(self, status: int = 200, error: str | None = None,
                      fault: str | None = None) -> None:
        self.set_status(status)
        self.render("password.html", error=error, user=self.session_user or "", fault=fault)

    async def start_login(self, user: str) -> None:
        """A fresh session id for a new login of `user`; past the user's cap of
        logins the oldest end, everywhere."""
        login_id = secrets.token_urlsafe(LOGIN_ID_BYTES)
        data: dict[str, object] = {"user": user, "login": login_id}
        if self.accounts_mode:
            data[ACCOUNT_MARK] = 1
        await self.regenerate_session(data)
        for pushed_out in await self.session_store.add_login(user, login_id):
            await self.session_store.end_login(user, pushed_out)
            await self.bus.end_login(pushed_out)


class MainHandler(PageHandler):
    """GET /: the chat page when logged in (with a fresh session id), else the login page."""

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        user = self.session_user
        if user is None:
            # A stale cookie may only mean another tab of this browser gave the
            # session a new id a moment ago (every GET / does): the page asks
            # again with the browser's current cookie (static/login.js).
            self.login_page(recheck=self.session_cookie_stale)
            return
        if not await self.regenerate_session():
            # Logged out, or another tab moved the session a moment ago.
            self.login_page(recheck=True)
            return
        self.render("chat.html", user=user, instance=self.instance,
                    accounts=self.accounts_mode)


class LoginHandler(PageHandler):
    """POST /login: check the name (and the password, in accounts mode), start a
    fresh session, go to the chat."""

    async def post(self) -> None:
        name = self.get_body_argument("user", default="").strip()
        if not is_valid_name(name):
            self.login_page(400, f"A user name is {NAME_RULE}.", name=name)
            return
        accounts = self.process.accounts
        if accounts is None:
            await self.start_login(name)
            self.redirect("/")
            return
        with LOGIN_SECONDS.time():  # every answer: a slow 401 or 429 is as telling as a 302
            await self._log_in(accounts, name, self.get_body_argument("password", default=""))

    async def _log_in(self, accounts: Accounts, name: str, password: str) -> None:
        try:
            account = await accounts.check(name, password, self.request.remote_ip or "")
        except Throttled as refused:
            self.too_many(refused.retry_after, name=name)
            return
        except Busy:
            self.busy(name=name)
            return
        if account is None:
            self.login_page(401, WRONG_PASSWORD, name=name)
            return
        await self.start_login(account.name)
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
