"""Accounts mode in a real Chromium, through HAProxy: sign up, log in, change password.

Every test runs on the session's accounts-mode stack (`accounts_stack`), each
simulated user in a browser context of its own (`open_account_user`), pinned
to an instance by HAProxy's `chatfleet_server` cookie where it matters. Names
are unique per test and passwords strong and random, so tests never meet.

All browser traffic comes from 127.0.0.1, and the login throttle counts 50
failures per client address (5 per name) in 15 minutes: this file makes only a
handful of wrong attempts in all (3), each on a name of its own test.

Every wait is on a condition with a generous timeout, never a fixed sleep.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, Response, expect

from stack.run import Stack
from tests.browser_support import (
    SCREENSHOTS,
    OpenUser,
    browser,
    expect_instance,
    expect_logged_out,
    expect_online,
    fill_log_in,
    fill_sign_up,
    log_in_with_password,
    messages,
    open_account_user,
    png_size,
    say,
    sign_up,
    strong_password,
    wait_for_message,
)
from tests.conftest import unique

__all__ = ["browser", "open_account_user"]  # fixtures, imported for pytest to find

pytestmark = pytest.mark.browser

# Losing an instance takes seconds: HAProxy needs two failed checks a second
# apart and the page backs off up to 10 s between tries.
FAILOVER_MS = 60_000

WRONG_PASSWORD = "That name and password do not match an account."
WRONG_OLD_PASSWORD = "The current password is not right."
# One of the most common passwords there are: refused, whoever picks it.
WELL_KNOWN_PASSWORD = "password123"


@pytest.fixture
def accounts_restored(accounts_stack: Stack) -> Iterator[Stack]:
    """The accounts stack; whole again afterwards (every instance started, all UP)."""
    yield accounts_stack
    accounts_stack.ctl("start", "chat:*")  # a no-op when already running
    accounts_stack.wait_ready()


def posted(path: str) -> Callable[[Response], bool]:
    """A predicate for `expect_response`: the answer to a POST of `path`."""
    return lambda r: r.request.method == "POST" and r.url.endswith(path)


def expect_error(page: Page, error_id: str, text: str | re.Pattern[str]) -> None:
    """The page shows `text` in p#error_id, announced (role=alert)."""
    error = page.locator(f"p#{error_id}")
    expect(error).to_be_visible()
    expect(error).to_have_text(text)
    expect(error).to_have_attribute("role", "alert")


def expect_invalid_and_focused(page: Page, field: str, error_id: str) -> None:
    """`field` is the focused control, marked invalid and described by the error."""
    control = page.locator(f"#{field}")
    expect(control).to_be_focused()
    expect(control).to_have_attribute("aria-invalid", "true")
    expect(control).to_have_attribute("aria-describedby", re.compile(rf"(^|\s){error_id}(\s|$)"))


def expect_no_chat(page: Page) -> None:
    """Not the chat page, and no session behind it."""
    expect(page.locator("body")).to_have_class("login-page")
    expect(page.locator("#messages")).to_have_count(0)
    expect(page.locator("#status")).to_have_count(0)
    assert page.request.get("/session").status == 401


def assert_not_echoed(page: Page, answer: Response, *secrets: str) -> None:
    """No password typed into the form comes back: neither in what the server
    sent nor in the page (an input's value would show in neither, so also ask)."""
    body = answer.text()
    html = page.content()
    for secret in secrets:
        assert secret not in body
        assert secret not in html
    for field in page.locator("input[type=password]").all():
        expect(field).to_have_value("")


# Every WebSocket close code this tab saw, kept in sessionStorage so that it
# outlives the page (a close 4401 sends the page elsewhere at once).
_RECORD_CLOSE_CODES_JS = """(() => {
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
        constructor(...args) {
            super(...args);
            this.addEventListener('close', (event) => {
                const codes = JSON.parse(sessionStorage.getItem('test.closeCodes') || '[]');
                sessionStorage.setItem('test.closeCodes', JSON.stringify([...codes, event.code]));
            });
        }
    };
})();"""
CLOSE_CODES_JS = "() => JSON.parse(sessionStorage.getItem('test.closeCodes') || '[]')"


def texts_from(page: Page, user: str) -> list[str]:
    return [m["text"] for m in messages(page) if m["user"] == user]


def wait_delivered(page: Page, user: str, text: str, timeout: float = FAILOVER_MS) -> None:
    page.wait_for_function(
        """([user, text]) => [...document.querySelectorAll('#messages .msg')].some(
            (li) => li.querySelector('.user')?.textContent === user
                && li.querySelector('.text')?.textContent === text)""",
        arg=[user, text],
        timeout=timeout,
    )


def test_login_page_screenshot(open_account_user: OpenUser) -> None:
    """docs/screenshots/login.png: the login and sign-up page, as a new user sees it."""
    page = open_account_user()
    page.goto("/")
    expect(page.locator("#login-user")).to_be_focused()
    expect(page.locator("#signup-password-rule")).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "login.png", full_page=True)
    assert png_size(SCREENSHOTS / "login.png")[0] == 1280


def test_sign_up_by_keyboard_reload_log_out_and_log_in(open_account_user: OpenUser) -> None:
    """Sign up with the keyboard alone, stay logged in across a reload, log out; a
    wrong password is refused with an announced error and no chat; the right one
    logs in from that same page."""
    name, password = unique("ann"), strong_password()
    page = open_account_user()
    page.goto("/")
    expect(page.locator("body")).to_have_class("login-page")

    # Keyboard only: the login form's name field has the focus; Tab reaches the
    # signup form, typing fills it, Enter sends it.
    expect(page.get_by_label("Name", exact=True)).to_be_focused()
    for label in ("Password", "Log in", "Pick a name"):
        page.keyboard.press("Tab")
        control = (page.get_by_role("button", name=label, exact=True) if label == "Log in"
                   else page.get_by_label(label, exact=True))
        expect(control).to_be_focused()
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Choose a password")).to_be_focused()
    page.keyboard.type(password)
    with page.expect_response(posted("/signup")) as signup:
        page.keyboard.press("Enter")
    assert signup.value.status == 302
    expect_online(page, name)
    expect(page).to_have_url(re.compile(r"/$"))
    assert password not in page.content()

    # A reload keeps the login.
    page.reload()
    expect_online(page, name)
    assert page.request.get("/session").json()["user"] == name

    page.get_by_role("button", name="Log out").click()
    expect_logged_out(page)

    # A wrong password: 401, the reason announced, the form marked, no chat.
    wrong = strong_password()
    with page.expect_response(posted("/login")) as answer:
        fill_log_in(page, name, wrong)
    assert answer.value.status == 401
    expect_error(page, "login-error", WRONG_PASSWORD)
    expect_invalid_and_focused(page, "login-user", "login-error")
    expect(page.locator("#login-user")).to_have_value(name)  # kept for the next try
    assert_not_echoed(page, answer.value, wrong, password)
    expect_no_chat(page)

    # The right password, from the page that showed the error.
    fill_log_in(page, name, password)
    expect_online(page, name)
    say(page, f"back in {unique('t')}")


def test_sign_up_refuses_a_taken_name_and_a_well_known_password(
    open_account_user: OpenUser,
) -> None:
    """A taken name (in any letter case) and a well-known password are refused with
    their reasons, announced next to the field at fault; the typed password never
    comes back in the page; a refused signup keeps nothing, not even the name."""
    owner_name = unique("ann")
    sign_up(open_account_user(), owner_name, strong_password())

    page = open_account_user()
    page.goto("/")
    for taken in (owner_name, owner_name.upper()):
        attempt = strong_password()
        with page.expect_response(posted("/signup")) as answer:
            fill_sign_up(page, taken, attempt)
        assert answer.value.status == 409
        expect_error(page, "signup-error", re.compile(r"name is taken", re.I))
        expect_invalid_and_focused(page, "signup-user", "signup-error")
        expect(page.locator("#signup-password")).not_to_have_attribute("aria-invalid", "true")
        expect(page.locator("#signup-user")).to_have_value(taken)
        assert_not_echoed(page, answer.value, attempt)
        expect_no_chat(page)

    name = unique("bob")
    with page.expect_response(posted("/signup")) as answer:
        fill_sign_up(page, name, WELL_KNOWN_PASSWORD)
    assert answer.value.status == 400
    expect_error(page, "signup-error", re.compile(r"too easy to guess.*well-known", re.I))
    expect_invalid_and_focused(page, "signup-password", "signup-error")
    expect(page.locator("#signup-user")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#signup-user")).to_have_value(name)
    assert_not_echoed(page, answer.value, WELL_KNOWN_PASSWORD)
    expect_no_chat(page)

    # Nothing was kept: the same name signs up with a good password.
    fill_sign_up(page, name, strong_password())
    expect_online(page, name)


def test_accounts_chat_across_instances_survives_kill_9(
    accounts_restored: Stack, open_account_user: OpenUser
) -> None:
    """Ann on instance 1 and bob on instance 2 chat; instance 1 dies (SIGKILL). Ann's
    page recovers on instance 2 by itself, still logged in (her session lives in
    Redis), and every message arrives on both pages."""
    stack = accounts_restored
    ann_name, bob_name = unique("ann"), unique("bob")
    ann = open_account_user(1)
    bob = open_account_user(2)
    sign_up(ann, ann_name, strong_password())
    sign_up(bob, bob_name, strong_password())
    expect_instance(ann, stack, 1)
    expect_instance(bob, stack, 2)
    ann_sent: list[str] = []
    bob_sent: list[str] = []

    def chat(tag: str) -> None:
        ann_sent.append(f"{tag} from ann {unique('t')}")
        say(ann, ann_sent[-1])
        bob_sent.append(f"{tag} from bob {unique('t')}")
        say(bob, bob_sent[-1])
        for page in (ann, bob):
            wait_delivered(page, ann_name, ann_sent[-1])
            wait_delivered(page, bob_name, bob_sent[-1])

    chat("before")
    # From here on ann's page must not go anywhere (a login page would be a navigation).
    navigations: list[str] = []
    ann.on("framenavigated", lambda frame: navigations.append(frame.url))

    pid = int(stack.ctl("pid", "chat:chat-1").strip())
    os.kill(pid, signal.SIGKILL)
    chat("right after the kill")  # ann's possibly into a dead socket: resent

    expect(ann.locator("body")).to_have_attribute(
        "data-instance", re.compile(rf":{stack.settings.port_base + 2}$"), timeout=FAILOVER_MS
    )
    expect(ann.locator("#status")).to_have_class(
        re.compile(r"\bstatus-online\b"), timeout=FAILOVER_MS
    )
    expect_online(ann, ann_name)
    chat("after the kill")
    assert navigations == []
    assert ann.request.get("/session").json()["user"] == ann_name
    for page in (ann, bob):
        assert texts_from(page, ann_name) == ann_sent
        assert texts_from(page, bob_name) == bob_sent

    # Instance 1 is back (supervisord), and a reload of ann's page finds her logged in.
    stack.wait_ready()
    assert int(stack.ctl("pid", "chat:chat-1").strip()) not in (0, pid)
    ann.reload()
    expect_online(ann, ann_name)
    assert texts_from(ann, ann_name) == ann_sent
    chat("after the reload")


def test_password_change_logs_out_the_other_browser(open_account_user: OpenUser) -> None:
    """Ann changes her password in one browser while another browser of hers has the
    chat open: that one is sent to the login page, this one stays in the chat. The old
    password no longer logs in; the new one does."""
    name, old, new = unique("ann"), strong_password(), strong_password()
    here = open_account_user(1)
    there = open_account_user(2)
    there.add_init_script(_RECORD_CLOSE_CODES_JS)
    sign_up(here, name, old)
    log_in_with_password(there, name, old)
    say(there, f"still here {unique('t')}")

    here.locator("a.account-link", has_text="Change password").click()
    expect(here).to_have_url(re.compile(r"/password$"))
    expect(here.get_by_label("Current password")).to_be_focused()
    here.get_by_label("Current password").fill(old)
    here.get_by_label("New password").fill(new)
    with here.expect_response(posted("/password")) as answer:
        here.get_by_role("button", name="Change password").click()
    assert answer.value.status == 302

    # The other browser's socket closes with 4401 (the session ended), and its page
    # goes to the login page.
    expect_logged_out(there)
    assert there.evaluate(CLOSE_CODES_JS) == [4401]
    # This one is back in the chat, online, and chats on.
    expect_online(here, name)
    assert here.request.get("/session").json()["user"] == name
    text = f"after the change {unique('t')}"
    say(here, text)
    wait_for_message(here, name, text)
    expect_online(here, name)  # not logged out a moment later either

    # The old password is refused now (a failure on record for this name: one)...
    with there.expect_response(posted("/login")) as refused:
        fill_log_in(there, name, old)
    assert refused.value.status == 401
    expect_error(there, "login-error", WRONG_PASSWORD)
    expect_no_chat(there)
    # ...and the new one logs in.
    fill_log_in(there, name, new)
    expect_online(there, name)
    wait_for_message(there, name, text)


def test_password_page_errors_point_at_the_field_at_fault(open_account_user: OpenUser) -> None:
    """A wrong current password marks that field; a well-known new one marks the new
    field; neither password comes back in the page, and nothing changed."""
    name, password = unique("ann"), strong_password()
    page = open_account_user()
    sign_up(page, name, password)
    page.goto("/password")

    wrong = strong_password()  # a failure on record for this name: one
    page.get_by_label("Current password").fill(wrong)
    page.get_by_label("New password").fill(strong_password())
    with page.expect_response(posted("/password")) as answer:
        page.get_by_label("New password").press("Enter")
    assert answer.value.status == 401
    expect_error(page, "password-error", WRONG_OLD_PASSWORD)
    expect_invalid_and_focused(page, "old", "password-error")
    expect(page.locator("#new")).not_to_have_attribute("aria-invalid", "true")
    assert_not_echoed(page, answer.value, wrong)

    page.get_by_label("Current password").fill(password)
    page.get_by_label("New password").fill(WELL_KNOWN_PASSWORD)
    with page.expect_response(posted("/password")) as answer:
        page.get_by_label("New password").press("Enter")
    assert answer.value.status == 400
    expect_error(page, "password-error", re.compile(r"too easy to guess", re.I))
    expect_invalid_and_focused(page, "new", "password-error")
    expect(page.locator("#old")).not_to_have_attribute("aria-invalid", "true")
    assert_not_echoed(page, answer.value, password, WELL_KNOWN_PASSWORD)

    # Still logged in, with the same password: nothing was changed.
    page.get_by_role("link", name="Back to the chat").click()
    expect_online(page, name)
    page.get_by_role("button", name="Log out").click()
    expect_logged_out(page)
    log_in_with_password(page, name, password)
