"""Chromium over HTTPS and WSS, through HAProxy holding the run's throwaway certificate
(tests/conftest.py `https_stack`; certificate errors ignored in these contexts only).

Two users sign up on different instances and chat; a refresh keeps the login; the
instance of one of them dies (kill -9) and the chat goes on. Every page and socket
stays on HTTPS, and the session and XSRF cookies are `Secure` throughout. Every
wait is on a condition, never a sleep.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from functools import partial

import pytest
from playwright.sync_api import Browser, Page, expect

from stack.run import Stack
from tests.browser_support import (
    OpenUser,
    browser,
    expect_instance,
    expect_online,
    fill_sign_up,
    say,
    sign_up,
    strong_password,
    user_contexts,
)
from tests.conftest import unique
from tests.test_browser_failover import (
    FAILOVER_MS,
    assert_exactly_once_in_order,
    chat_in_pairs,
    expect_back_online,
)

__all__ = ["browser"]  # a fixture, imported for pytest to find

pytestmark = pytest.mark.browser


@pytest.fixture
def https_user(browser: Browser, https_stack: Stack) -> Iterator[OpenUser]:
    """As `open_user`, on the HTTPS stack's https:// address; its self-made certificate
    is accepted in these contexts only."""
    with user_contexts(browser, https_stack, base_url=https_stack.https_url) as make:
        yield partial(make, ignore_https_errors=True)


@pytest.fixture
def https_restored(https_stack: Stack) -> Iterator[Stack]:
    """The HTTPS stack; every instance started and UP again afterwards."""
    yield https_stack
    https_stack.ctl("start", "chat:*")  # a no-op when already running
    https_stack.wait_ready()


def expect_secure_cookies(page: Page) -> None:
    """The session and XSRF cookies the page holds are `Secure` (never sent over HTTP)."""
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert cookies["jsessionid"]["secure"] and cookies["jsessionid"]["httpOnly"]
    assert cookies["_xsrf"]["secure"]


def test_chat_over_https_and_wss_through_a_refresh_and_a_kill_9(
    https_restored: Stack, https_user: OpenUser
) -> None:
    stack = https_restored
    sockets: list[str] = []
    ann_name, bob_name = unique("ann"), unique("bob")
    ann, bob = https_user(1), https_user(2)
    ann.on("websocket", lambda ws: sockets.append(ws.url))

    # Ann types the plain address: HAProxy sends her to HTTPS, same path.
    ann.goto(f"{stack.url}/")
    assert ann.url == f"{stack.https_url}/"
    fill_sign_up(ann, ann_name, strong_password())
    expect_online(ann, ann_name)
    sign_up(bob, bob_name, strong_password())
    expect_instance(ann, stack, 1)
    expect_instance(bob, stack, 2)
    for page in (ann, bob):
        expect_secure_cookies(page)
    first_ann, first_bob = chat_in_pairs(ann, ann_name, bob, bob_name, "over wss")
    ann_sent, bob_sent = [first_ann], [first_bob]

    # A refresh: still logged in, the history back, chat on.
    response = ann.reload()
    assert response is not None and response.status == 200
    expect_online(ann, ann_name)
    more_ann, more_bob = chat_in_pairs(ann, ann_name, bob, bob_name, "after the refresh")
    ann_sent.append(more_ann)
    bob_sent.append(more_bob)

    # Ann's instance dies; what she types meanwhile waits and is sent from instance 2.
    os.kill(int(stack.ctl("pid", "chat:chat-1").strip()), signal.SIGKILL)
    text = f"ann right after the kill {unique('t')}"
    say(ann, text)
    ann_sent.append(text)
    expect(ann.locator("body")).to_have_attribute(
        "data-instance", re.compile(rf":{stack.settings.port_base + 2}$"), timeout=FAILOVER_MS
    )
    expect_back_online(ann, ann_name)
    last_ann, last_bob = chat_in_pairs(ann, ann_name, bob, bob_name, "after the kill")
    ann_sent.append(last_ann)
    bob_sent.append(last_bob)
    assert_exactly_once_in_order(ann, ann_name, ann_sent, bob, bob_name, bob_sent)

    expect_secure_cookies(ann)  # the reconnect's fresh cookies too
    assert len(sockets) >= 3  # the first, after the refresh, after the kill
    assert all(url.startswith(f"wss://127.0.0.1:{stack.https_url.rsplit(':', 1)[1]}/ws")
               for url in sockets), sockets
