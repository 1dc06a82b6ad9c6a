"""Rooms in the real page: join/create, unread badges, rooms kept over a refresh, history
pages on scroll, presence across processes (also after a kill -9), typing notices.

Every user is a browser context of its own, pinned to a chat instance by HAProxy's
cookie, so what one sees from another has crossed processes through Redis. Every
test works in rooms of its own (unique names); every wait is on a condition with a
generous timeout, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from chatclient import ChatSocket, HttpSession
from stack.run import Stack
from tests.browser_support import (
    OpenUser,
    browser,
    exactly,
    expect_instance,
    expect_outbox_empty,
    expect_people,
    join_room,
    log_in,
    open_user,
    room_button,
    room_messages,
    say,
    switch_room,
    two_logged_in,
    wait_for_room_message,
)
from tests.conftest import unique

__all__ = ["browser", "open_user"]  # fixtures, imported for pytest to find

pytestmark = pytest.mark.browser

LOBBY = "lobby"
HISTORY_ON_JOIN = 50  # docs/protocol.md: a join without `after` replays the last 50
# A closed socket's user stays present for a 10 s reconnect grace, then the next
# presence sweep (every 5 s) announces `left`.
GRACE_LEFT_TIMEOUT_MS = 40_000
# A dead instance's entries lapse after the 15 s presence TTL, then the next sweep.
KILLED_LEFT_TIMEOUT_MS = 60_000


def rooms_listed(page: Page) -> list[str]:
    result: list[str] = page.locator("#rooms button[data-room]").evaluate_all(
        "(buttons) => buttons.map((b) => b.dataset.room)"
    )
    return result


def texts(page: Page, room: str) -> list[str]:
    return [m["text"] for m in room_messages(page, room)]


@pytest.fixture
def restored(stack: Stack) -> Iterator[Stack]:
    """The shared stack, made whole again (every instance healthy and UP) afterwards."""
    yield stack
    stack.wait_ready()


def test_rooms_chat_and_unread_badge(open_user: OpenUser, stack: Stack) -> None:
    room = unique("room")
    ann, ann_name, bob, bob_name = two_logged_in(open_user)
    expect_instance(ann, stack, 1)
    expect_instance(bob, stack, 2)
    expect(ann.locator("#leave-room")).to_be_hidden()  # no leaving the lobby

    # Ann creates the room with the join form: listed, current, and shown.
    join_room(ann, room, ann_name)
    assert rooms_listed(ann) == [LOBBY, room]
    expect(room_button(ann, room)).to_have_class("room-button current")
    expect(room_button(ann, LOBBY)).not_to_have_attribute("aria-current", "true")
    expect(ann.locator("#leave-room")).to_be_visible()
    expect(ann.locator(f'ol.room-log[data-room="{room}"]')).to_be_visible()
    expect(ann.locator('ol.room-log[data-room="lobby"]')).to_be_hidden()
    expect(ann.locator("#room-name")).to_have_value("")
    expect_people(ann, [ann_name])

    # Bob, on the other instance, joins it too; each sees the other there.
    join_room(bob, room, bob_name)
    expect_people(bob, [ann_name, bob_name])
    expect_people(ann, [ann_name, bob_name])
    expect(ann.locator(f'ol.room-log[data-room="{room}"] .notice', has_text=f"{bob_name} joined")
           ).to_have_count(1)

    hello = f"hello room {unique('t')}"
    say(ann, hello)
    wait_for_room_message(bob, room, ann_name, hello)
    wait_for_room_message(ann, room, ann_name, hello)
    answer = f"hi back {unique('t')}"
    say(bob, answer)
    wait_for_room_message(ann, room, bob_name, answer)
    wait_for_room_message(bob, room, bob_name, answer)
    expect_outbox_empty(ann)
    expect_outbox_empty(bob)
    for page, me in ((ann, ann_name), (bob, bob_name)):
        assert room_messages(page, room) == [
            {"user": ann_name, "text": hello, "mine": me == ann_name},
            {"user": bob_name, "text": answer, "mine": me == bob_name},
        ]
        # The room's messages never reach the lobby's log.
        assert not {hello, answer} & set(texts(page, LOBBY))

    # Ann goes back to the lobby: the room's log is hidden, nothing of it shows.
    switch_room(ann, LOBBY)
    expect(ann.locator(f'ol.room-log[data-room="{room}"]')).to_be_hidden()
    expect(ann.locator("#messages .msg:visible", has_text=hello)).to_have_count(0)
    expect(ann.locator("#leave-room")).to_be_hidden()
    badge = room_button(ann, room).locator(".unread")
    expect(badge).to_have_count(0)

    # Bob writes in the room while Ann is in the lobby: her room button counts them.
    unseen = [f"while away {n} {unique('t')}" for n in range(2)]
    say(bob, unseen[0])
    expect(badge).to_have_text("1")
    expect(badge).to_have_attribute("aria-label", "1 unread")
    say(bob, unseen[1])
    expect(badge).to_have_text("2")
    expect(room_button(ann, LOBBY).locator(".unread")).to_have_count(0)
    assert not set(unseen) & set(texts(ann, LOBBY))
    for text in unseen:
        expect(ann.locator("#messages .msg:visible", has_text=text)).to_have_count(0)

    # Switching to the room clears the badge and shows what came meanwhile.
    switch_room(ann, room)
    expect(badge).to_have_count(0)
    for text in unseen:
        expect(ann.locator("#messages .msg:visible", has_text=text)).to_be_visible()
    assert texts(ann, room) == [hello, answer, *unseen]
    # Now Bob is the one away: Ann's next message is unread for him, never for her.
    switch_room(bob, LOBBY)
    mine = f"from ann {unique('t')}"
    say(ann, mine)
    wait_for_room_message(ann, room, ann_name, mine)
    expect(room_button(bob, room).locator(".unread")).to_have_text("1")
    expect(room_button(ann, room).locator(".unread")).to_have_count(0)


def test_rooms_survive_refresh(open_user: OpenUser, stack: Stack) -> None:
    first, second = sorted([unique("room"), unique("room")])
    ann_name = unique("ann")
    ann = open_user(1)
    log_in(ann, ann_name)
    join_room(ann, first, ann_name)
    join_room(ann, second, ann_name)
    assert rooms_listed(ann) == [LOBBY, first, second]

    switch_room(ann, first)
    ann.locator("#leave-room").click()
    expect(ann.locator("#room-title")).to_have_text("#lobby")
    expect(room_button(ann, first)).to_have_count(0)
    expect(ann.locator(f'ol.room-log[data-room="{first}"]')).to_have_count(0)
    assert rooms_listed(ann) == [LOBBY, second]
    # Someone else writes in the kept room; Ann reads it there, then goes back.
    news = seed_room(stack, second, writers=1, each=2)
    expect(room_button(ann, second).locator(".unread")).to_have_text("2")
    switch_room(ann, second)
    assert texts(ann, second) == news
    switch_room(ann, LOBBY)
    # The server handles one socket's frames in order: once this lobby message is
    # acknowledged, the leave before it has been handled (and forgotten for the login).
    marker = f"left a room {unique('t')}"
    say(ann, marker)
    expect_outbox_empty(ann)

    for _ in range(2):  # and a second refresh changes nothing
        response = ann.reload()
        assert response is not None and response.status == 200
        # The rooms come with the hello frame, before the lobby's presence.
        expect(ann.locator("#people li", has_text=exactly(ann_name))).to_have_count(1)
        expect(ann.locator("#rooms button[data-room]")).to_have_count(2)
        assert rooms_listed(ann) == [LOBBY, second]
        expect(ann.locator("#room-title")).to_have_text("#lobby")
        # The kept room is really joined again: its history is back, once, and not
        # counted as unread (it was read before the refresh).
        expect(ann.locator(f'ol.room-log[data-room="{second}"] .msg')).to_have_count(len(news))
        assert texts(ann, second) == news
        expect(room_button(ann, second).locator(".unread")).to_have_count(0)
        switch_room(ann, second)
        # (The writer may still be listed: a closed socket keeps its user a while.)
        expect(ann.locator("#people li", has_text=exactly(ann_name))).to_have_count(1)
        switch_room(ann, LOBBY)
    again = f"still here {unique('t')}"
    switch_room(ann, second)
    say(ann, again)
    wait_for_room_message(ann, second, ann_name, again)
    expect_outbox_empty(ann)


def ack_or_error(cid: str, frame: dict[str, Any]) -> bool:
    """The ack of `cid`, or an error refusing it (rather than waiting out a timeout)."""
    return frame.get("cid") == cid or frame.get("type") == "error"


def seed_room(stack: Stack, room: str, writers: int, each: int) -> list[str]:
    """`writers` protocol clients (alternating instances) write `each` messages in `room`,
    one after another, each acknowledged before the next; returns the texts in order.

    Several writers because of the per-user rate limit (bursts of 10). Runs its own
    event loop in a worker thread: Playwright's sync API owns this thread's loop.
    """
    tag = unique("h")

    async def write() -> list[str]:
        sent: list[str] = []
        for w in range(writers):
            http = HttpSession(stack.url)
            http.cookies["chatfleet_server"] = f"chat{1 + w % 2}"
            sock: ChatSocket | None = None
            try:
                assert (await http.login(unique(f"w{w}"))).code == 302
                sock = await ChatSocket.connect(http)
                await sock.next_of("presence", room=LOBBY)
                await sock.send({"type": "join", "room": room})
                await sock.next_of("presence", room=room)
                for _ in range(each):
                    text = f"{tag} {len(sent):02d}"
                    cid = unique("c")
                    await sock.send({"type": "chat", "room": room, "text": text, "cid": cid})
                    reply = await sock.next(partial(ack_or_error, cid))
                    assert reply["type"] == "ack", reply
                    sent.append(text)
            finally:
                if sock is not None:
                    sock.close()
                http.close()
        return sent

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, write()).result(timeout=120)


def test_history_on_join_and_older_pages_on_scroll(open_user: OpenUser, stack: Stack) -> None:
    room = unique("room")
    sent = seed_room(stack, room, writers=6, each=10)
    assert len(sent) == 60

    ann_name = unique("ann")
    ann = open_user(1)
    log_in(ann, ann_name)
    join_room(ann, room, ann_name)
    log = ann.locator(f'ol.room-log[data-room="{room}"] .msg')
    # Exactly the last 50, oldest first; the newest is in view.
    expect(log).to_have_count(HISTORY_ON_JOIN)
    assert texts(ann, room) == sent[-HISTORY_ON_JOIN:]
    expect(log.last).to_be_in_viewport()
    expect(log.first).not_to_be_in_viewport()

    # Scrolling the messages to the top loads the 10 older ones, in order, no repeats.
    ann.locator("#messages").hover()
    ann.mouse.wheel(0, -100_000)
    expect(log).to_have_count(len(sent))
    assert texts(ann, room) == sent
    # Prepending keeps what the reader was looking at: not thrown to the very top.
    assert ann.locator("#messages").evaluate("(el) => el.scrollTop") > 0

    # Nothing older is left: scrolling to the top again adds nothing.
    ann.locator("#messages").hover()
    ann.mouse.wheel(0, -100_000)
    expect(ann.locator("#messages")).to_have_js_property("scrollTop", 0)
    ann.wait_for_function(
        "(room) => !window.chatfleet.state.rooms.get(room).loadingHistory"
        " && !window.chatfleet.state.rooms.get(room).more",
        arg=room,
    )
    assert texts(ann, room) == sent


def test_presence_across_processes(open_user: OpenUser, stack: Stack) -> None:
    room = unique("room")
    names = {"ann": unique("ann"), "bob": unique("bob"), "cat": unique("cat")}
    pages: dict[str, Page] = {}
    for key, instance in (("ann", 1), ("bob", 2), ("cat", 1)):
        page = open_user(instance)
        log_in(page, names[key])
        expect_instance(page, stack, instance)
        join_room(page, room, names[key])
        pages[key] = page

    everyone = sorted(names.values())
    for page in pages.values():
        expect_people(page, everyone)

    # Cat closes the page (no `leave`): after the reconnect grace, the others see
    # Cat gone, on her own instance (1) and on the other one (2) alike.
    started = time.monotonic()
    pages["cat"].context.close()
    for key in ("ann", "bob"):
        page = pages[key]
        expect_people(page, [names["ann"], names["bob"]], timeout=GRACE_LEFT_TIMEOUT_MS)
        expect(page.locator(f'ol.room-log[data-room="{room}"] .notice',
                            has_text=f"{names['cat']} left")).to_have_count(1)
    gone_after = time.monotonic() - started
    print(f"closed page: {names['cat']} left after {gone_after:.1f} s")
    # Not at once: a closed socket keeps its user for the grace, in case it comes back.
    assert gone_after > 5, f"left after {gone_after:.1f} s, before the reconnect grace"
    # The lobby saw her leave too (no stale entry there either).
    switch_room(pages["ann"], LOBBY)
    expect(pages["ann"].locator("#people li", has_text=exactly(names["cat"]))).to_have_count(
        0, timeout=GRACE_LEFT_TIMEOUT_MS
    )


def test_presence_cleanup_after_kill_9(open_user: OpenUser, restored: Stack) -> None:
    stack = restored
    room = unique("room")
    ann, ann_name, bob, bob_name = two_logged_in(open_user)
    expect_instance(ann, stack, 1)
    expect_instance(bob, stack, 2)
    join_room(ann, room, ann_name)
    join_room(bob, room, bob_name)
    expect_people(ann, [ann_name, bob_name])
    expect_people(bob, [ann_name, bob_name])

    pid = int(stack.ctl("pid", "chat:chat-2").strip())
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    # Bob must not come back on the surviving instance: his only presence entry
    # is now the dead instance's, which nobody refreshes any more.
    bob.context.close()

    bob_listed = ann.locator("#people li", has_text=exactly(bob_name))
    expect(bob_listed).to_have_count(0, timeout=KILLED_LEFT_TIMEOUT_MS)
    expect(ann.locator(f'ol.room-log[data-room="{room}"] .notice', has_text=f"{bob_name} left")
           ).to_have_count(1)
    print(f"kill -9: {bob_name} left after {time.monotonic() - started:.1f} s")
    expect_people(ann, [ann_name])
    # Ann, on the surviving instance, was never disturbed.
    expect_instance(ann, stack, 1)
    expect(ann.locator("#status")).to_have_text("online")


def test_typing_indicator(open_user: OpenUser) -> None:
    room = unique("room")
    ann, ann_name, bob, bob_name = two_logged_in(open_user)
    join_room(ann, room, ann_name)
    join_room(bob, room, bob_name)
    expect_people(ann, [ann_name, bob_name])

    typing = bob.locator("#typing")
    expect(typing).to_have_text("")
    text = ann.locator("#text")
    text.click()
    shown = f"{ann_name} is typing…"

    def until_bob_sees_ann_typing() -> None:
        # Typing notices are best effort (never stored; a busy receiver may miss one)
        # and a page sends at most one every 3 s: type on until Bob sees one.
        for attempt in range(6):
            text.press_sequentially(f"draft {attempt} ")
            try:
                expect(typing).to_have_text(shown, timeout=5_000)
                return
            except AssertionError:
                continue
        pytest.fail(f"Bob never saw {ann_name} typing")

    until_bob_sees_ann_typing()
    expect(ann.locator("#typing")).to_have_text("")  # never told about herself
    # Only in that room: Bob's lobby shows nobody typing.
    switch_room(bob, LOBBY)
    expect(typing).to_have_text("")
    switch_room(bob, room)
    until_bob_sees_ann_typing()  # (still shown, or shown again: a notice lasts 5 s)

    # Ann sends: the message itself ends her typing notice at Bob's, at once (not
    # only when the notice times out 5 s later).
    draft = text.input_value()
    text.press("Enter")
    expect(text).to_have_value("")
    seen = bob.wait_for_function(
        """([room, user, text]) => {
            const log = document.querySelector(`#messages ol.room-log[data-room="${room}"]`);
            const shown = [...log.querySelectorAll('.msg')].some(
                (li) => li.querySelector('.user').textContent === user
                    && li.querySelector('.text').textContent === text);
            return shown && { typing: document.getElementById('typing').textContent };
        }""",
        arg=[room, ann_name, draft],
    ).json_value()
    assert seen == {"typing": ""}, f"typing line still {seen} when the message was shown"
    expect(typing).to_have_text("")
    expect_outbox_empty(ann)
