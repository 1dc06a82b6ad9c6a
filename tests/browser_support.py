"""Shared pieces of the browser tests: one Debian Chromium, a context per user, page helpers.

Import the fixtures into a test module (`from tests.browser_support import
browser, open_user`) to use them there; `open_account_user` is the same on the
accounts-mode stack.
"""

from __future__ import annotations

import json
import re
import struct
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Route,
    ViewportSize,
    WebSocketRoute,
    expect,
    sync_playwright,
)

from stack.run import Stack
from tests.conftest import unique

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous: a loaded CI box may need seconds for a page, a socket and a fan-out.
TIMEOUT_MS = 20_000
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def png_size(path: Path) -> tuple[int, int]:
    """A PNG file's (width, height), read from its header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height
NAME_ERROR = "A user name is 1 to 32 letters, digits, '.', '_' or '-'."

expect.set_options(timeout=TIMEOUT_MS)

# [{user, text, mine}] for every chat message in #messages, in page order.
_MESSAGES_JS = """() => [...document.querySelectorAll('#messages .msg')].map((li) => ({
    user: li.querySelector('.user')?.textContent ?? null,
    text: li.querySelector('.text')?.textContent ?? null,
    mine: li.classList.contains('mine'),
}))"""

_HAS_MESSAGE_JS = """([user, text]) => [...document.querySelectorAll('#messages .msg')].some(
    (li) => li.querySelector('.user')?.textContent === user
        && li.querySelector('.text')?.textContent === text)"""


# Module scope, not session: while the sync API is started, its event loop counts as
# running in this thread, so every asyncio test after it would fail with "Runner.run()
# cannot be called from a running event loop". Only this module uses a browser, so
# this is still one Chromium per test session, stopped before the asyncio tests run.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for every browser test."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


OpenUser = Callable[..., Page]


@contextmanager
def user_contexts(browser: Browser, stack: Stack, base_url: str = "") -> Iterator[OpenUser]:
    """Opens a new context (one simulated user) and a page in it on `stack` (at
    `base_url`, default `stack.url`), per call; every context is closed on leaving.

    `instance=n` pins the context to chat instance n with HAProxy's cookie
    before its first request.
    """
    contexts: list[BrowserContext] = []
    url = base_url or stack.url

    def make(instance: int | None = None, **options: Any) -> Page:
        options.setdefault("viewport", DESKTOP)
        context = browser.new_context(base_url=url, **options)
        contexts.append(context)
        context.set_default_timeout(TIMEOUT_MS)
        if instance is not None:
            context.add_cookies(
                [{"name": "chatfleet_server", "value": f"chat{instance}", "url": url}]
            )
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def open_user(browser: Browser, stack: Stack) -> Iterator[OpenUser]:
    """A new context (one simulated user) and a page in it on the shared (open mode)
    stack; closed at the end of the test. `instance=n` pins it to chat instance n."""
    with user_contexts(browser, stack) as make:
        yield make


@pytest.fixture
def open_account_user(browser: Browser, accounts_stack: Stack) -> Iterator[OpenUser]:
    """As `open_user`, on the accounts-mode stack (a name needs its password)."""
    with user_contexts(browser, accounts_stack) as make:
        yield make


def log_in(page: Page, name: str) -> None:
    """From the login page to an online chat page as `name`."""
    page.goto("/")
    page.locator("#user").fill(name)
    page.locator("#user").press("Enter")
    expect_online(page, name)


def two_logged_in(open_user: OpenUser, first: str = "ann",
                  second: str = "bob") -> tuple[Page, str, Page, str]:
    """Two users with fresh names from these prefixes, on instances 1 and 2, logged in:
    (first's page, first's name, second's page, second's name)."""
    names = unique(first), unique(second)
    pages = open_user(1), open_user(2)
    for page, name in zip(pages, names, strict=True):
        log_in(page, name)
    return pages[0], names[0], pages[1], names[1]


def expect_online(page: Page, name: str) -> None:
    """The chat page for `name`, socket open, and the lobby's history and presence in."""
    expect(page.locator("body")).to_have_class("chat-page")
    expect(page.locator("#me")).to_have_text(name)
    expect(page.locator("#status")).to_have_class(re.compile(r"\bstatus-online\b"))
    expect(page.locator("#status")).to_have_text("online")
    # Presence comes after the replayed history: once we are listed, history is in.
    expect(page.locator("#people li", has_text=re.compile(f"^{re.escape(name)}$"))).to_have_count(1)


def expect_instance(page: Page, stack: Stack, n: int) -> None:
    """The page's socket greeted it from chat instance n (set from the hello frame)."""
    port = stack.settings.port_base + n
    expect(page.locator("body")).to_have_attribute("data-instance", re.compile(rf":{port}$"))


def say(page: Page, text: str) -> None:
    """Type `text` in the composer and press Enter."""
    page.locator("#text").fill(text)
    page.locator("#text").press("Enter")
    expect(page.locator("#text")).to_have_value("")


def wait_for_message(page: Page, user: str, text: str) -> None:
    page.wait_for_function(_HAS_MESSAGE_JS, arg=[user, text], timeout=TIMEOUT_MS)


def messages(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.evaluate(_MESSAGES_JS)
    return result


# The page's stored outbox: static/chat/state.js keeps one per user.
STORED_OUTBOX_JS = (
    "JSON.parse(sessionStorage.getItem('chatfleet.outbox.' + document.body.dataset.user) || '[]')"
)


def expect_outbox_empty(page: Page) -> None:
    """Everything sent was acknowledged: no pending item shown, none kept for a resend."""
    expect(page.locator("#outbox li")).to_have_count(0)
    page.wait_for_function(
        f"() => window.chatfleet.state.outbox.length === 0 && {STORED_OUTBOX_JS}.length === 0",
        timeout=TIMEOUT_MS,
    )


class HeldProbes:
    """Holds the page's GET /session reconnect probes in flight (a slow network) until
    released, so the page stays offline for exactly as long as the test needs."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.held: list[Route] = []
        self.released = False
        page.route("**/session", self._hold)

    def _hold(self, route: Route) -> None:
        if self.released:
            route.continue_()
        else:
            self.held.append(route)  # neither continued nor aborted yet: the fetch waits

    def release(self) -> None:
        # Continue before unrouting: unroute itself may continue (handle) what is held.
        self.released = True
        for route in self.held:
            route.continue_()
        self.held.clear()
        self.page.unroute("**/session")


# -- rooms ---------------------------------------------------------------------

# [{user, text, mine}] for the chat messages of one room's log, in page order.
_ROOM_MESSAGES_JS = """(room) => [...document.querySelectorAll(
    `#messages ol.room-log[data-room="${room}"] .msg`)].map((li) => ({
    user: li.querySelector('.user')?.textContent ?? null,
    text: li.querySelector('.text')?.textContent ?? null,
    mine: li.classList.contains('mine'),
}))"""

_ROOM_HAS_MESSAGE_JS = """([room, user, text]) => [...document.querySelectorAll(
    `#messages ol.room-log[data-room="${room}"] .msg`)].some(
    (li) => li.querySelector('.user')?.textContent === user
        && li.querySelector('.text')?.textContent === text)"""


def room_button(page: Page, room: str) -> Locator:
    """The room's button in the rooms list (room names never need CSS escaping)."""
    return page.locator(f'#rooms button[data-room="{room}"]')


def exactly(text: str) -> re.Pattern[str]:
    """A pattern matching exactly `text`, for has_text= filters."""
    return re.compile(f"^{re.escape(text)}$")


def join_room(page: Page, room: str, me: str) -> None:
    """Join (or create) `room` with the join form; it becomes current and its presence is in."""
    page.locator("#room-name").fill(room)
    page.locator("#room-name").press("Enter")
    expect(page.locator("#room-title")).to_have_text(f"#{room}")
    expect(room_button(page, room)).to_have_attribute("aria-current", "true")
    # The people list of a fresh room is empty until the server's presence frame,
    # which follows the replayed history: once we are listed, the join is complete.
    expect(page.locator("#people li", has_text=exactly(me))).to_have_count(1)


def switch_room(page: Page, room: str) -> None:
    """Make `room` (already in the rooms list) the current one by clicking its button."""
    room_button(page, room).click()
    expect(page.locator("#room-title")).to_have_text(f"#{room}")
    expect(room_button(page, room)).to_have_attribute("aria-current", "true")
    expect(page.locator(f'#messages ol.room-log[data-room="{room}"]')).to_be_visible()


def room_messages(page: Page, room: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.evaluate(_ROOM_MESSAGES_JS, room)
    return result


def wait_for_room_message(page: Page, room: str, user: str, text: str) -> None:
    page.wait_for_function(_ROOM_HAS_MESSAGE_JS, arg=[room, user, text], timeout=TIMEOUT_MS)


def expect_people(page: Page, names: list[str], timeout: float = TIMEOUT_MS) -> None:
    """The current room's people list is exactly `names` (shown sorted)."""
    expect(page.locator("#people li")).to_have_text(sorted(names), timeout=timeout)


# -- accounts (on the accounts-mode stack) ---------------------------------------


def strong_password() -> str:
    """A password no list knows: the server refuses well-known ones."""
    return f"pw-{uuid.uuid4().hex}"


def fill_sign_up(page: Page, name: str, password: str) -> None:
    """On the login page: fill the signup form by its labels and press Enter."""
    page.get_by_label("Pick a name").fill(name)
    page.get_by_label("Choose a password").fill(password)
    page.get_by_label("Choose a password").press("Enter")


def fill_log_in(page: Page, name: str, password: str) -> None:
    """On the login page: fill the login form by its labels and press Enter."""
    form = page.locator("#login-form")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Password", exact=True).fill(password)
    form.get_by_label("Password", exact=True).press("Enter")


def sign_up(page: Page, name: str, password: str) -> None:
    """A new account from the login page; lands on the chat page, online."""
    page.goto("/")
    fill_sign_up(page, name, password)
    expect_online(page, name)


def log_in_with_password(page: Page, name: str, password: str) -> None:
    """From the login page to an online chat page as `name`, with its password."""
    page.goto("/")
    fill_log_in(page, name, password)
    expect_online(page, name)


def expect_logged_out(page: Page) -> None:
    """The login page, and it stays: the session is gone for this context too."""
    expect(page.locator("body")).to_have_class("login-page")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#me")).to_have_count(0)
    if page.locator("script[src*='login.js']").count():
        # A stale cookie: the page asks /session again before it settles (static/login.js).
        expect(page.locator("body")).to_have_attribute("data-recheck", "done")
    assert page.request.get("/session").status == 401


# The page's WebSocket URL (with or without the resume query).
WS_URL = re.compile(r"/ws(\?|$)")


class SocketGate:
    """Every WebSocket of one page goes through here (a Playwright route).

    While `shut`, the server is unreachable for the page: its socket is closed and
    every new one is closed at once (the page keeps retrying). With `drop_chats`,
    chat frames from the page are lost on the way. Kept: the URL of each socket
    the page opened (`urls`), and every frame that did reach the server
    (`delivered`).
    """

    def __init__(self, page: Page) -> None:
        self.is_shut = False
        self.drop_chats = False
        self.urls: list[str] = []
        self.delivered: list[dict[str, Any]] = []
        self._live: WebSocketRoute | None = None
        page.route_web_socket(WS_URL, self._route)

    def _route(self, ws: WebSocketRoute) -> None:
        if self.is_shut:
            ws.close(code=1011, reason="unreachable (test)")
            return
        self.urls.append(ws.url)
        server = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if self.drop_chats and frame.get("type") == "chat":
                return
            self.delivered.append(frame)
            server.send(message)

        ws.on_message(to_server)
        self._live = ws

    def shut(self) -> None:
        self.is_shut = True
        if self._live is not None:
            self._live.close(code=1011, reason="unreachable (test)")
            self._live = None

    def open(self) -> None:
        self.is_shut = False

    def texts_delivered(self) -> list[object]:
        return [f.get("text") for f in self.delivered if f.get("type") == "chat"]

    def joins_of(self, room: str) -> list[dict[str, Any]]:
        return [f for f in self.delivered if f.get("type") == "join" and f.get("room") == room]
