"""POST /signup and GET/POST /password (docs/protocol.md: Accounts); both answer
404 in open mode, where a name is all a login takes."""

from __future__ import annotations

import tornado.web

from accounts import Busy, Throttled
from accounts.service import Refused
from handlers.pages import PageHandler
from rooms.names import NAME_RULE, is_valid_name

WRONG_OLD_PASSWORD = "The current password is not right."


class AccountsOnly(PageHandler):
    def check_xsrf_cookie(self) -> None:
        self.prepare_accounts()  # open mode: 404, before the XSRF check's 403
        super().check_xsrf_cookie()

    def prepare_accounts(self) -> None:
        if not self.accounts_mode:
            raise tornado.web.HTTPError(404)


class SignupHandler(AccountsOnly):
    """POST /signup: a new account for a free name and a good password; logged in."""

    async def post(self) -> None:
        self.prepare_accounts()
        accounts = self.process.accounts
        assert accounts is not None
        name = self.get_body_argument("user", default="").strip()
        password = self.get_body_argument("password", default="")
        if not is_valid_name(name):
            self.login_page(400, f"A user name is {NAME_RULE}.", form="signup", name=name,
                            fault="name")
            return
        try:
            account = await accounts.sign_up(name, password, self.request.remote_ip or "")
        except Refused as refused:
            self.login_page(refused.status, refused.reason, form="signup", name=name,
                            fault=refused.field)
            return
        except Throttled as refused:
            self.too_many(refused.retry_after, name=name, form="signup")
            return
        except Busy:
            self.busy(name=name, form="signup")
            return
        await self.start_login(account.name)
        self.redirect("/")


class PasswordHandler(AccountsOnly):
    """GET /password: the form; POST /password: check the old password, store the
    new one, end every other login of the user (their sockets close with 4401
    on every instance) and keep this one with a fresh session id."""

    async def get(self) -> None:
        self.prepare_accounts()
        self.set_header("Cache-Control", "no-store")
        if self.session_user is None:
            self.redirect("/")
            return
        self.password_page()

    async def post(self) -> None:
        self.prepare_accounts()
        accounts = self.process.accounts
        assert accounts is not None
        user = self.session_user
        login_id = self.session.get("login")
        if user is None or not isinstance(login_id, str):
            raise tornado.web.HTTPError(401)
        old = self.get_body_argument("old", default="")
        new = self.get_body_argument("new", default="")
        try:
            account = await accounts.check(user, old, self.request.remote_ip or "")
            if account is None:
                self.password_page(401, WRONG_OLD_PASSWORD, fault="old")
                return
            await accounts.change_password(account, new)
        except Throttled as refused:
            self.too_many(refused.retry_after, page="password")
            return
        except Busy:
            self.busy(page="password")
            return
        except Refused as refused:
            self.password_page(refused.status, refused.reason, fault=refused.field)
            return
        for other in await self.session_store.logins_of(user):
            if other != login_id:
                await self.session_store.end_login(user, other)
                await self.bus.end_login(other)
        await self.regenerate_session()
        self.redirect("/")
