"""The original app's failover tests in a real Chromium: lose an instance or Redis mid-chat.

Two users, two browser contexts pinned by HAProxy's cookie: ann on instance 1,
bob on instance 2. Then instance 1 is restarted (drained, close 1012) or
killed with SIGKILL, Redis is restarted, ann's page is reloaded while her
instance is dead, or both instances are stopped while ann types. Each time the
page must come back by itself, still logged in, and every message typed on
either side must show on both pages exactly once and in order; ann's outbox
(what was typed but not acknowledged) must end empty.

These tests break the session's shared stack on purpose: the `restored`
fixture starts whatever was stopped and waits until every instance is UP
again, whatever the outcome. Every wait is on a condition, never a sleep.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import Page, WebSocket, expect

from stack.run import Stack
from tests.browser_support import (
    STORED_OUTBOX_JS,
    HeldProbes,
    OpenUser,
    browser,
    expect_instance,
    expect_online,
    expect_outbox_empty,
    log_in,
    messages,
    open_user,
    say,
)
from tests.conftest import unique

__all__ = ["browser", "open_user"]  # fixtures, imported for pytest to find

pytestmark = pytest.mark.browser

# Losing an instance or Redis takes seconds: HAProxy needs two failed checks a
# second apart, a drain waits 3 s and spreads its closes over 3 s more, the
# page backs off up to 10 s between tries, and a Redis subscriber up to 5 s.
FAILOVER_MS = 60_000


@pytest.fixture
def restored(stack: Stack) -> Iterator[Stack]:
    """The shared stack; whole again afterwards (Redis and every instance started, all UP)."""
    yield stack
    stack.ctl("start", "redis")  # no-ops when already running
    stack.ctl("start", "chat:*")
    stack.wait_ready()


def texts_from(page: Page, user: str) -> list[str]:
    """The texts of `user`'s chat messages as shown on `page`, in page order."""
    return [m["text"] for m in messages(page) if m["user"] == user]


def expect_back_online(page: Page, name: str) -> None:
    """The page reconnected by itself: online, with the lobby's history and presence in."""
    expect(page.locator("#status")).to_have_class(
        re.compile(r"\bstatus-online\b"), timeout=FAILOVER_MS
    )
    expect_online(page, name)


def wait_offline(page: Page) -> None:
    """The page noticed its socket is gone."""
    page.wait_for_function("() => !window.chatfleet.state.online", timeout=FAILOVER_MS)


def wait_delivered(page: Page, user: str, text: str) -> None:
    page.wait_for_function(
        """([user, text]) => [...document.querySelectorAll('#messages .msg')].some(
            (li) => li.querySelector('.user')?.textContent === user
                && li.querySelector('.text')?.textContent === text)""",
        arg=[user, text],
        timeout=FAILOVER_MS,
    )


def expect_outbox_drained(page: Page) -> None:
    expect(page.locator("#outbox li")).to_have_count(0, timeout=FAILOVER_MS)
    expect_outbox_empty(page)


def expect_pending(page: Page, text: str) -> None:
    """`text` waits in the outbox: shown as pending and kept in sessionStorage for a resend."""
    expect(page.locator("#outbox li", has_text=text)).to_have_count(1)
    stored = page.evaluate(f"() => {STORED_OUTBOX_JS}.map((m) => m.text)")
    assert text in stored


# Makes this page's GET /session probes fail at once, as if the network were down.
_PROBES_FAIL_JS = """() => {
    const fetch = window.fetch;
    window.fetch = (url, init) => String(url).endsWith('/session')
        ? Promise.reject(new TypeError('network down (test)'))
        : fetch(url, init);
}"""


def chat_in_pairs(ann: Page, ann_name: str, bob: Page, bob_name: str, tag: str) -> tuple[str, str]:
    """One message each way, both seen on both pages; returns the two texts."""
    from_ann = f"{tag} from ann {unique('t')}"
    say(ann, from_ann)
    from_bob = f"{tag} from bob {unique('t')}"
    say(bob, from_bob)
    for page in (ann, bob):
        wait_delivered(page, ann_name, from_ann)
        wait_delivered(page, bob_name, from_bob)
    return from_ann, from_bob


def two_users(
    open_user: OpenUser, stack: Stack, watch_ann: Callable[[Page], None] | None = None
) -> tuple[Page, str, Page, str]:
    """Ann logged in on instance 1, bob on instance 2 (`watch_ann` sees ann's page first)."""
    ann_name, bob_name = unique("ann"), unique("bob")
    ann = open_user(1)
    bob = open_user(2)
    if watch_ann is not None:
        watch_ann(ann)
    log_in(ann, ann_name)
    log_in(bob, bob_name)
    expect_instance(ann, stack, 1)
    expect_instance(bob, stack, 2)
    return ann, ann_name, bob, bob_name


def assert_exactly_once_in_order(
    ann: Page, ann_name: str, ann_sent: list[str], bob: Page, bob_name: str, bob_sent: list[str]
) -> None:
    """Both pages show exactly what each user typed, once each, in the order typed."""
    wait_delivered(bob, ann_name, ann_sent[-1])
    wait_delivered(ann, ann_name, ann_sent[-1])
    wait_delivered(ann, bob_name, bob_sent[-1])
    wait_delivered(bob, bob_name, bob_sent[-1])
    expect_outbox_drained(ann)
    expect_outbox_drained(bob)
    for page in (ann, bob):
        assert texts_from(page, ann_name) == ann_sent
        assert texts_from(page, bob_name) == bob_sent


def test_planned_restart_of_ann_instance(restored: Stack, open_user: OpenUser) -> None:
    """The original app's Test 2: instance 1 restarts under ann while she keeps typing;
    her page moves to instance 2 by itself and nothing is lost or repeated."""
    stack = restored
    ann, ann_name, bob, bob_name = two_users(open_user, stack)
    first_ann, first_bob = chat_in_pairs(ann, ann_name, bob, bob_name, "before")
    ann_sent, bob_sent = [first_ann], [first_bob]

    held = HeldProbes(ann)
    with ThreadPoolExecutor(1) as pool:
        restart = pool.submit(stack.ctl, "restart", "chat:chat-1")  # blocks while it drains
        # Typed while instance 1 drains: the socket is still open and serves.
        text = f"while draining {unique('t')}"
        say(ann, text)
        ann_sent.append(text)

        # Instance 1 closes ann's socket (1012); her probe is held, so she stays offline
        # while bob chats and she types on.
        wait_offline(ann)
        for n in (1, 2):
            text = f"bob while ann is away {n} {unique('t')}"
            say(bob, text)
            bob_sent.append(text)
        for n in (1, 2):
            text = f"ann while offline {n} {unique('t')}"
            say(ann, text)
            ann_sent.append(text)
            expect_pending(ann, text)
        expect_outbox_drained(bob)  # bob's messages are stored before ann comes back

        held.release()
        expect_back_online(ann, ann_name)
        expect(ann.locator("body")).to_have_attribute(
            "data-instance", re.compile(rf":{stack.settings.port_base + 2}$"), timeout=FAILOVER_MS
        )
        for n in (1, 2):
            text = f"ann after the restart {n} {unique('t')}"
            say(ann, text)
            ann_sent.append(text)
        assert "chat-1" in restart.result(timeout=60)

    assert_exactly_once_in_order(ann, ann_name, ann_sent, bob, bob_name, bob_sent)
    expect_instance(ann, stack, 2)
    expect_instance(bob, stack, 2)


def test_kill_9_of_ann_instance(restored: Stack, open_user: OpenUser) -> None:
    """The same with SIGKILL: no drain, no close frame; supervisord restarts instance 1 and
    ann's page recovers on instance 2 by itself."""
    stack = restored
    ann, ann_name, bob, bob_name = two_users(open_user, stack)
    first_ann, first_bob = chat_in_pairs(ann, ann_name, bob, bob_name, "before")
    ann_sent, bob_sent = [first_ann], [first_bob]

    pid = int(stack.ctl("pid", "chat:chat-1").strip())
    os.kill(pid, signal.SIGKILL)
    # Typed at once: possibly into a socket that is already dead, before the page knows.
    for n in (1, 2):
        text = f"ann right after the kill {n} {unique('t')}"
        say(ann, text)
        ann_sent.append(text)
    for n in (1, 2):
        text = f"bob during the outage {n} {unique('t')}"
        say(bob, text)
        bob_sent.append(text)

    expect_back_online(ann, ann_name)
    expect(ann.locator("body")).to_have_attribute(
        "data-instance", re.compile(rf":{stack.settings.port_base + 2}$"), timeout=FAILOVER_MS
    )
    for n in (1, 2):
        text = f"ann after the kill {n} {unique('t')}"
        say(ann, text)
        ann_sent.append(text)
    text = f"bob after the kill {unique('t')}"
    say(bob, text)
    bob_sent.append(text)

    assert_exactly_once_in_order(ann, ann_name, ann_sent, bob, bob_name, bob_sent)
    assert int(stack.ctl("pid", "chat:chat-1").strip()) not in (0, pid)  # restarted


def test_reload_while_pinned_instance_is_dead(restored: Stack, open_user: OpenUser) -> None:
    """Kill -9 ann's instance and reload her page at once: HAProxy serves it from the other
    instance, still logged in, with the recent history, and she chats on."""
    stack = restored
    ann, ann_name, bob, bob_name = two_users(open_user, stack)
    ann_sent, bob_sent = [], []
    for _ in range(2):
        from_ann, from_bob = chat_in_pairs(ann, ann_name, bob, bob_name, "before")
        ann_sent.append(from_ann)
        bob_sent.append(from_bob)
    expect_outbox_drained(ann)

    pid = int(stack.ctl("pid", "chat:chat-1").strip())
    os.kill(pid, signal.SIGKILL)
    response = ann.reload()
    # A 502 here is HAProxy sending the request to the dying process, with no retry
    # elsewhere: haproxy.cfg needs `retry-on conn-failure empty-response`.
    assert response is not None and response.status == 200
    expect(ann.locator("body")).to_have_class("chat-page")
    expect(ann.locator("#user")).to_have_count(0)
    expect_back_online(ann, ann_name)
    assert texts_from(ann, ann_name) == ann_sent
    assert texts_from(ann, bob_name) == bob_sent

    text = f"ann after the reload {unique('t')}"
    say(ann, text)
    ann_sent.append(text)
    text = f"bob after ann's reload {unique('t')}"
    say(bob, text)
    bob_sent.append(text)
    assert_exactly_once_in_order(ann, ann_name, ann_sent, bob, bob_name, bob_sent)


def test_typed_while_every_instance_is_down_is_sent_once_after(
    restored: Stack, open_user: OpenUser
) -> None:
    """Both instances stop (nothing can serve: HAProxy answers 503). What ann and bob type
    meanwhile waits in their outboxes. Bob's page resends by itself once the instances are
    back; ann reloads first, and her reloaded page resends from sessionStorage. Each
    message arrives exactly once."""
    stack = restored
    ann, ann_name, bob, bob_name = two_users(open_user, stack)
    first_ann, first_bob = chat_in_pairs(ann, ann_name, bob, bob_name, "before")
    ann_sent, bob_sent = [first_ann], [first_bob]

    # Ann's page may not reconnect by itself in this test: her reload is what resends.
    # Her probes fail inside the page (not in a route: a route handler only runs when
    # this thread calls Playwright, so a probe could wait there and then race the reload).
    ann.evaluate(_PROBES_FAIL_JS)
    assert "stopped" in stack.ctl("stop", "chat:*")  # drains both (1012); then HAProxy's 503s
    wait_offline(ann)
    wait_offline(bob)
    text_a = f"ann while everything is down {unique('t')}"
    say(ann, text_a)
    ann_sent.append(text_a)
    text_b = f"bob while everything is down {unique('t')}"
    say(bob, text_b)
    bob_sent.append(text_b)
    expect_pending(ann, text_a)
    expect_pending(bob, text_b)

    stack.ctl("start", "chat:*")
    stack.wait_ready()
    response = ann.reload()
    assert response is not None and response.status == 200
    expect_back_online(ann, ann_name)
    expect_back_online(bob, bob_name)
    wait_delivered(bob, ann_name, text_a)
    wait_delivered(ann, bob_name, text_b)
    expect_outbox_drained(ann)
    expect_outbox_drained(bob)

    more_ann, more_bob = chat_in_pairs(ann, ann_name, bob, bob_name, "after")
    ann_sent.append(more_ann)
    bob_sent.append(more_bob)
    assert_exactly_once_in_order(ann, ann_name, ann_sent, bob, bob_name, bob_sent)


# Last in this file: a Redis restart leaves stale connections in the instances' pools.
def test_redis_restart_keeps_both_logged_in_and_loses_nothing(
    restored: Stack, open_user: OpenUser
) -> None:
    """Redis stops under two online users and comes back (AOF): both stay logged in, what
    was typed meanwhile waits in the outbox and arrives once, with its original cid."""
    stack = restored
    # Every chat frame ann's page sends, as (text, cid): resends must keep their cid.
    chat_frames: list[tuple[str, str]] = []
    sockets: list[WebSocket] = []

    def on_frame(payload: str | bytes) -> None:
        frame = json.loads(payload)
        if frame.get("type") == "chat":
            chat_frames.append((frame["text"], frame["cid"]))

    def on_socket(ws: WebSocket) -> None:
        sockets.append(ws)
        ws.on("framesent", on_frame)

    def times_sent(text: str) -> int:
        return sum(1 for sent, _ in chat_frames if sent == text)

    ann, ann_name, bob, bob_name = two_users(
        open_user, stack, lambda p: p.on("websocket", on_socket)
    )
    first_ann, first_bob = chat_in_pairs(ann, ann_name, bob, bob_name, "before")
    ann_sent, bob_sent = [first_ann], [first_bob]

    assert "stopped" in stack.ctl("stop", "redis")
    down_a = [f"ann while redis is down {n} {unique('t')}" for n in (1, 2)]
    for text in down_a:
        say(ann, text)
    ann_sent += down_a
    down_b = f"bob while redis is down {unique('t')}"
    say(bob, down_b)
    bob_sent.append(down_b)
    for page, text in ((ann, down_a[0]), (ann, down_a[1]), (bob, down_b)):
        # Refused with `unavailable`: nothing stored, kept for a resend.
        expect(page.locator("#status")).to_have_class(
            re.compile(r"\bstatus-trouble\b"), timeout=FAILOVER_MS
        )
        expect_pending(page, text)
    # A real outage: HAProxy sees both instances unhealthy, and ann's page has resent
    # (and been refused) twice by itself. The pages stay as they are.
    stack.wait_servers("DOWN", ["chat1", "chat2"])
    for _ in range(20):  # bounded: one resend round every 2 s
        if times_sent(down_a[0]) >= 3:
            break
        with sockets[-1].expect_event(
            "framesent", predicate=lambda p: down_a[0] in str(p), timeout=FAILOVER_MS
        ):
            pass  # waits here, on leaving the block, for ann's next resend
    assert times_sent(down_a[0]) >= 3
    for page, pending in ((ann, down_a), (bob, [down_b])):
        expect(page.locator("body")).to_have_class("chat-page")
        for text in pending:
            expect_pending(page, text)

    assert "started" in stack.ctl("start", "redis")
    stack.wait_ready()
    for text in down_a:
        wait_delivered(bob, ann_name, text)
    wait_delivered(ann, bob_name, down_b)
    expect_outbox_drained(ann)
    expect_outbox_drained(bob)

    for page, name in ((ann, ann_name), (bob, bob_name)):
        expect_back_online(page, name)  # never sent to the login page
        assert page.request.get("/session").json()["user"] == name  # the session survived
    more_ann, more_bob = chat_in_pairs(ann, ann_name, bob, bob_name, "after redis")
    ann_sent.append(more_ann)
    bob_sent.append(more_bob)
    assert_exactly_once_in_order(ann, ann_name, ann_sent, bob, bob_name, bob_sent)
    for text in down_a:  # resent, and every resend carried the original cid
        assert len({cid for sent, cid in chat_frames if sent == text}) == 1

    # And a reload finds the same login and the same history, once.
    ann.reload()
    expect_online(ann, ann_name)
    assert texts_from(ann, ann_name) == ann_sent
    assert texts_from(ann, bob_name) == bob_sent
