"""A message waiting in the outbox belongs to the user who typed it: after a logout or
a session end it is never sent under the name of whoever logs in next in the same tab.

The outbox (typed, not yet acknowledged) lives in the tab's sessionStorage so that it
survives a refresh; the tab also outlives its login. Each test queues a message of
ann's that the server never got, ends her session one way or another (the logout
button; a close 4401; another tab's logout, then bob's login, while hers was offline;
another tab's logout alone), logs bob in in the same tab, and checks everything that
reached the server from that tab, what an observer's page received live, and the
lobby's history: ann's text never arrives, as anyone's message. Every wait is on a
condition, never a fixed sleep.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser_support import (
    HeldProbes,
    OpenUser,
    SocketGate,
    browser,
    expect_online,
    expect_outbox_empty,
    log_in,
    messages,
    open_user,
    say,
    wait_for_message,
)
from tests.conftest import unique

__all__ = ["browser", "open_user"]  # fixtures, imported for pytest to find

pytestmark = pytest.mark.browser

# The page's sockets: /ws, with or without ?after=.

# Every text kept under any sessionStorage key of the page's tab.
_STORED_JS = "() => Object.keys(sessionStorage).map((key) => sessionStorage.getItem(key))"


def queue_unsent(page: Page, text: str) -> None:
    """Type `text`; it waits in the page's outbox (shown pending, kept for a resend)."""
    say(page, text)
    expect(page.locator("#outbox li", has_text=text)).to_have_count(1)
    page.wait_for_function(
        "(text) => window.chatfleet.state.outbox.some((m) => m.text === text)", arg=text
    )


def expect_login_page_without(page: Page, text: str) -> None:
    """The tab shows the login page and keeps `text` nowhere in its sessionStorage."""
    expect(page.locator("body")).to_have_class("login-page")
    expect(page.locator("#user")).to_be_visible()
    stored = page.evaluate(_STORED_JS)
    assert not [value for value in stored if text in value], stored


def expect_never_sent(
    tab: Page, gate: SocketGate, bob_name: str, observer: Page, observer_name: str, queued: str
) -> None:
    """Bob, now this tab's user, chats once. Ann's queued text never reached the server
    from this tab, nor the observer's page (live, or from the room's history), as anyone's."""
    try:
        expect_online(tab, bob_name)
    except AssertionError:
        leaked = [m for m in messages(observer) if m["text"] == queued]
        assert not leaked, f"ann's queued text arrived as {leaked}"
        raise
    # The page resends its outbox as soon as the socket greets it, and the server
    # handles one socket's frames in order: once bob's next message is through,
    # anything queued before it would have been delivered too.
    marker = f"bob after ann {unique('t')}"
    say(tab, marker)
    wait_for_message(observer, bob_name, marker)
    expect_outbox_empty(tab)
    assert marker in gate.texts_delivered()
    assert queued not in gate.texts_delivered()
    assert not [m for m in messages(observer) if m["text"] == queued]
    assert not [m for m in messages(tab) if m["text"] == queued]

    observer.reload()  # the lobby's recent history, as stored
    expect_online(observer, observer_name)
    wait_for_message(observer, bob_name, marker)
    assert not [m for m in messages(observer) if m["text"] == queued]


def users(open_user: OpenUser) -> tuple[Page, SocketGate, str, str, Page, str]:
    """An observer in the lobby, and ann logged in on a tab whose sockets pass a gate."""
    ann_name, bob_name, observer_name = unique("ann"), unique("bob"), unique("obs")
    observer = open_user()
    log_in(observer, observer_name)
    tab = open_user()
    gate = SocketGate(tab)
    log_in(tab, ann_name)
    return tab, gate, ann_name, bob_name, observer, observer_name


def test_logout_drops_what_ann_queued(open_user: OpenUser) -> None:
    """Ann types while the server is unreachable, logs out; bob logs in in her tab."""
    tab, gate, ann_name, bob_name, observer, observer_name = users(open_user)
    gate.shut()
    expect(tab.locator("#status")).to_have_class(re.compile(r"\bstatus-reconnecting\b"))
    queued = f"ann while unreachable {unique('t')}"
    queue_unsent(tab, queued)

    tab.get_by_role("button", name="Log out").click()
    expect_login_page_without(tab, queued)
    assert tab.request.get("/session").status == 401

    gate.open()
    log_in(tab, bob_name)
    expect_never_sent(tab, gate, bob_name, observer, observer_name, queued)


def test_session_ended_elsewhere_drops_what_ann_queued(open_user: OpenUser) -> None:
    """Ann's chat frame is lost on the way; her login ends from another tab (her socket
    closes 4401, her page goes to the login page); bob logs in in her tab."""
    tab, gate, ann_name, bob_name, observer, observer_name = users(open_user)
    gate.drop_chats = True
    queued = f"ann lost on the way {unique('t')}"
    queue_unsent(tab, queued)

    other_tab = tab.context.new_page()
    other_tab.goto("/")
    expect_online(other_tab, ann_name)
    expect(tab.locator("#outbox li", has_text=queued)).to_have_count(1)  # still unsent
    other_tab.get_by_role("button", name="Log out").click()
    expect(other_tab.locator("body")).to_have_class("login-page")
    expect_login_page_without(tab, queued)  # closed 4401, sent to the login page
    other_tab.close()

    gate.drop_chats = False
    log_in(tab, bob_name)
    expect_never_sent(tab, gate, bob_name, observer, observer_name, queued)


def offline_then_logged_out_elsewhere(
    tab: Page, gate: SocketGate, ann_name: str, label: str
) -> tuple[HeldProbes, str, Page]:
    """Ann's tab goes offline (its probes held) with a message queued; she logs
    out in another tab of the same browser. The probes, the text, that tab."""
    probes = HeldProbes(tab)
    gate.shut()
    expect(tab.locator("#status")).to_have_class(re.compile(r"\bstatus-reconnecting\b"))
    queued = f"{label} {unique('t')}"
    queue_unsent(tab, queued)
    other_tab = tab.context.new_page()
    other_tab.goto("/")
    expect_online(other_tab, ann_name)
    other_tab.get_by_role("button", name="Log out").click()
    expect(other_tab.locator("body")).to_have_class("login-page")
    return probes, queued, other_tab


def test_tab_offline_while_another_tab_switches_user(open_user: OpenUser) -> None:
    """Ann's tab is offline with a message queued while, in another tab, she logs out
    and bob logs in: the browser's cookie is bob's when her tab reconnects. The page
    sees the session is no longer ann's and becomes bob's page without sending it."""
    tab, gate, ann_name, bob_name, observer, observer_name = users(open_user)
    # Her tab's reconnect waits (held probes) until bob is logged in.
    probes, queued, other_tab = offline_then_logged_out_elsewhere(
        tab, gate, ann_name, "ann offline")
    log_in(other_tab, bob_name)

    gate.open()
    probes.release()
    expect_never_sent(tab, gate, bob_name, observer, observer_name, queued)
    expect_outbox_empty(other_tab)


def test_tab_offline_while_its_login_ends_elsewhere(open_user: OpenUser) -> None:
    """Ann's tab is offline with a message queued while she logs out in another tab.
    Her tab's reconnect finds the session gone and shows the login page, keeping
    nothing; bob logs in in that tab."""
    tab, gate, ann_name, bob_name, observer, observer_name = users(open_user)
    # Her tab's reconnect waits (held probes) until she has logged out.
    probes, queued, other_tab = offline_then_logged_out_elsewhere(
        tab, gate, ann_name, "ann offline at logout")
    other_tab.close()

    gate.open()
    probes.release()
    expect_login_page_without(tab, queued)
    log_in(tab, bob_name)
    expect_never_sent(tab, gate, bob_name, observer, observer_name, queued)
