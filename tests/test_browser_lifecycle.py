"""Edits, deletes and resets in the real page (docs/protocol.md: Edits and deletes;
Resume that says when it cannot), in Debian's Chromium.

Every user is a browser context of its own, pinned to a chat instance by HAProxy's
cookie where it matters, so an edit or delete one sees of another has crossed
processes through Redis. Every test works in rooms of its own (unique names); every
wait is on a condition with a generous timeout, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from chatclient import ChatSocket, HttpSession
from stack.run import Stack
from tests.browser_support import (
    DESKTOP,
    TIMEOUT_MS,
    OpenUser,
    SocketGate,
    browser,
    exactly,
    expect_online,
    expect_outbox_empty,
    join_room,
    log_in,
    open_user,
    room_messages,
    say,
    switch_room,
    wait_for_room_message,
)
from tests.conftest import lone_instance, unique

__all__ = ["browser", "open_user"]  # fixtures, imported for pytest to find

pytestmark = pytest.mark.browser

LOBBY = "lobby"
# The page's sockets: /ws, with or without ?after=.
RESET_TEXT = "Earlier messages are no longer available"

T = TypeVar("T")


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a protocol client's coroutine on an event loop of its own, in a worker
    thread: Playwright's sync API owns this thread's loop."""

    async def main() -> T:
        return await make()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=180)


def go_offline(page: Page, gate: SocketGate) -> None:
    """No network for the page, and its socket gone with it."""
    page.context.set_offline(True)
    gate.shut()
    expect(page.locator("#status")).not_to_have_text("online")


def go_online(page: Page, gate: SocketGate, name: str) -> None:
    gate.open()
    page.context.set_offline(False)
    expect_online(page, name)


def message_item(page: Page, room: str, text: str) -> Locator:
    """The list item of the message with exactly `text` in `room`'s log."""
    return page.locator(f'#messages ol.room-log[data-room="{room}"] li.msg').filter(
        has=page.locator(".text", has_text=exactly(text)))


def room_state(page: Page, room: str, field: str) -> Any:
    return page.evaluate("([room, field]) => window.chatfleet.state.rooms.get(room)?.[field]",
                         [room, field])


def expect_nowhere(page: Page, text: str) -> None:
    """`text` is in none of the page's DOM, storage, or pending edits and deletes."""
    found = page.evaluate(
        """(text) => {
            const state = window.chatfleet.state;
            const stored = [localStorage, sessionStorage].flatMap(
                (store) => Object.keys(store).map((key) => store.getItem(key)));
            return {
                dom: document.documentElement.outerHTML.includes(text),
                storage: stored.some((value) => value && value.includes(text)),
                changes: JSON.stringify(state.changes).includes(text),
                outbox: JSON.stringify(state.outbox).includes(text),
            };
        }""",
        text,
    )
    assert found == {"dom": False, "storage": False, "changes": False, "outbox": False}, found


def two_in_a_room(open_user: OpenUser) -> tuple[Page, str, Page, str, str]:
    """Ann (instance 1) creates a room, so she owns it; Bob (instance 2) joins it."""
    ann_name, bob_name, room = unique("ann"), unique("bob"), unique("room")
    ann, bob = open_user(1), open_user(2)
    log_in(ann, ann_name)
    log_in(bob, bob_name)
    join_room(ann, room, ann_name)
    join_room(bob, room, bob_name)
    return ann, ann_name, bob, bob_name, room


def test_edit_with_the_up_arrow_live_and_after_a_refresh(open_user: OpenUser) -> None:
    ann, ann_name, bob, bob_name, room = two_in_a_room(open_user)
    draft, final = f"helo wrld {unique('t')}", f"hello world {unique('t')}"
    say(ann, f"older {draft}")
    say(ann, draft)
    for page in (ann, bob):
        wait_for_room_message(page, room, ann_name, draft)

    # The up arrow in the empty composer edits her last message here; Escape cancels.
    text = ann.locator("#text")
    text.press("ArrowUp")
    editor = ann.get_by_role("textbox", name="Edit your message")
    expect(editor).to_be_focused()
    expect(editor).to_have_value(draft)
    expect(message_item(ann, room, draft).locator(".editor")).to_have_count(1)
    editor.fill("not this")
    editor.press("Escape")
    expect(editor).to_have_count(0)
    expect(text).to_be_focused()
    expect(message_item(ann, room, draft)).to_have_count(1)

    # Again, and Enter saves: the new text in place, marked, here and at Bob's.
    text.press("ArrowUp")
    expect(editor).to_be_focused()
    editor.fill(final)
    editor.press("Enter")
    expect(editor).to_have_count(0)
    expect(text).to_be_focused()
    for page in (ann, bob):
        edited = message_item(page, room, final)
        expect(edited).to_have_count(1)
        expect(edited.locator(".edited-mark")).to_have_text("(edited)")
        expect(edited.locator(".edited-mark")).to_be_visible()
        expect(message_item(page, room, draft)).to_have_count(0)
        # The other message is untouched, and not marked.
        older = message_item(page, room, f"older {draft}")
        expect(older).to_have_count(1)
        expect(older.locator(".edited-mark")).to_have_count(0)
    expect(message_item(ann, room, final).locator(".pending-mark")).to_have_count(0)
    # Only the author is offered the edit.
    expect(message_item(bob, room, final).get_by_role("button", name="Edit")).to_have_count(0)

    # After a refresh the room's history has the edited text, marked.
    bob.reload()
    expect_online(bob, bob_name)
    switch_room(bob, room)
    wait_for_room_message(bob, room, ann_name, final)
    expect(message_item(bob, room, final).locator(".edited-mark")).to_have_text("(edited)")
    assert [m["text"] for m in room_messages(bob, room)] == [f"older {draft}", final]


def test_delete_own_message_live_and_after_a_refresh(open_user: OpenUser) -> None:
    ann, ann_name, bob, bob_name, room = two_in_a_room(open_user)
    kept, secret = f"keep me {unique('t')}", f"regret this {unique('t')}"
    say(ann, kept)
    say(ann, secret)
    for page in (ann, bob):
        wait_for_room_message(page, room, ann_name, secret)

    # By keyboard: her message's Delete, then the question's Delete (focused).
    item = message_item(ann, room, secret)
    item.get_by_role("button", name="Delete your message").focus()
    ann.keyboard.press("Enter")
    question = item.get_by_role("group", name="Delete your message for everyone?")
    expect(question).to_be_visible()
    # Escape asks no more, and nothing is deleted.
    ann.keyboard.press("Escape")
    expect(question).to_have_count(0)
    expect(item.get_by_role("button", name="Delete your message")).to_be_focused()
    ann.keyboard.press("Enter")
    expect(question.get_by_role("button", name="Delete")).to_be_focused()
    ann.keyboard.press("Enter")

    for page in (ann, bob):
        expect(message_item(page, room, secret)).to_have_count(0)
        expect(message_item(page, room, kept)).to_have_count(1)
    expect(ann.locator("#text")).to_be_focused()
    expect(ann.locator("#announcer")).to_have_text("Message deleted.")
    expect_nowhere(bob, secret)
    expect_nowhere(ann, secret)

    bob.reload()
    expect_online(bob, bob_name)
    switch_room(bob, room)
    wait_for_room_message(bob, room, ann_name, kept)
    assert [m["text"] for m in room_messages(bob, room)] == [kept]
    expect_nowhere(bob, secret)


def test_the_room_owner_deletes_another_users_message(open_user: OpenUser) -> None:
    ann, ann_name, bob, bob_name, room = two_in_a_room(open_user)
    own, rude = f"ann here {unique('t')}", f"something rude {unique('t')}"
    say(ann, own)
    wait_for_room_message(bob, room, ann_name, own)
    say(bob, rude)
    wait_for_room_message(ann, room, bob_name, rude)

    # Bob, a member, may delete only his own; Ann owns the room.
    expect(message_item(bob, room, own).get_by_role("button", name=re.compile("Delete"))) \
        .to_have_count(0)
    assert room_state(ann, room, "role") == "owner"
    item = message_item(ann, room, rude)
    item.hover()
    item.get_by_role("button", name=f"Delete message by {bob_name}").click()
    item.get_by_role("group", name="Delete this message for everyone?") \
        .get_by_role("button", name="Delete").click()

    for page in (ann, bob):
        expect(message_item(page, room, rude)).to_have_count(0)
        expect(message_item(page, room, own)).to_have_count(1)
    expect_nowhere(bob, rude)
    expect_nowhere(ann, rude)
    bob.reload()
    expect_online(bob, bob_name)
    switch_room(bob, room)
    wait_for_room_message(bob, room, ann_name, own)
    assert [m["text"] for m in room_messages(bob, room)] == [own]


def test_a_refused_edit_is_an_alert_and_the_text_stays(open_user: OpenUser) -> None:
    ann, ann_name, bob, bob_name, room = two_in_a_room(open_user)
    words = f"bob's words {unique('t')}"
    say(bob, words)
    wait_for_room_message(ann, room, bob_name, words)

    # Ann, the owner, mutes Bob (a minute): his edits are refused.
    ann.locator("#people button.person", has_text=exactly(bob_name)).click()
    ann.locator('#person-actions button[data-action="mute"]').click()
    expect(ann.locator("#notices .banner-text", has_text=f"{bob_name} is muted")).to_have_count(1)

    item = message_item(bob, room, words)
    item.hover()
    item.get_by_role("button", name="Edit your message").click()
    editor = bob.get_by_role("textbox", name="Edit your message")
    expect(editor).to_be_focused()
    editor.fill(f"{words} (muted edit)")
    bob.get_by_role("button", name="Save").click()
    expect(bob.locator("#alerts[role=alert] .banner-text")).to_have_text(
        f"Your edit in #{room} was not saved: you are muted in this room for now.")
    expect(item.get_by_role("button", name="Edit your message")).to_be_focused()
    # The text the server has, unmarked, here and at Ann's.
    for page in (ann, bob):
        shown = message_item(page, room, words)
        expect(shown).to_have_count(1)
        expect(shown.locator(".edited-mark")).to_have_count(0)
        expect(shown.locator(".pending-mark")).to_have_count(0)
    assert not [m for m in room_messages(ann, room) if "muted edit" in (m["text"] or "")]

    # An empty edit is not sent: the editor says why and stays.
    item.get_by_role("button", name="Edit your message").click()
    editor.fill("   ")
    editor.press("Enter")
    expect(bob.locator("#edit-problem")).to_have_text(
        "A message cannot be empty: to remove it, use Delete.")
    expect(editor).to_be_focused()
    editor.press("Escape")
    expect(editor).to_have_count(0)


@contextmanager
def page_on(browser: Browser, url: str) -> Iterator[Page]:
    """A page in a context of its own whose relative URLs go to `url` (a lone instance)."""
    context = browser.new_context(base_url=url, viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


async def post(url: str, room: str, texts: list[str], lobby_text: str | None = None) -> list[str]:
    """A protocol client on `url`: says `lobby_text` in the lobby (if any), then each
    of `texts` in `room`, each acknowledged before the next; their ids."""
    http = HttpSession(url)
    sock: ChatSocket | None = None
    try:
        assert (await http.login(unique("w"))).code == 302
        sock = await ChatSocket.connect(http)
        await sock.next_of("presence", room=LOBBY)
        ids: list[str] = []

        async def chat(where: str, text: str) -> None:
            cid = unique("c")
            assert sock is not None
            await sock.send({"type": "chat", "room": where, "text": text, "cid": cid})
            reply = await sock.next(lambda f: (f["type"] == "ack" and f["cid"] == cid)
                                    or f["type"] == "error")
            assert reply["type"] == "ack", reply
            ids.append(reply["id"])

        if lobby_text is not None:
            await chat(LOBBY, lobby_text)
            ids.clear()
        await sock.send({"type": "join", "room": room})
        await sock.next_of("presence", room=room)
        for text in texts:
            await chat(room, text)
        return ids
    finally:
        if sock is not None:
            sock.close()
        http.close()


def test_a_trimmed_resume_says_so_and_chat_goes_on(browser: Browser, stack: Stack) -> None:
    """A room that keeps 10 messages, 130 more while the page was offline: its resume
    gets `reset` (trimmed), shown as a dismissible notice; the recent messages come
    once each, and the page chats on."""
    name, room, tag = unique("ann"), unique("room"), unique("m")
    with lone_instance(stack, "--stream-maxlen=10", "--rate-limit=0") as url, \
            page_on(browser, url) as page:
        first = f"{tag} first"
        # The lobby and the room have history before the page comes: their epochs.
        run_async(lambda: post(url, room, [first], lobby_text=f"{tag} lobby"))
        gate = SocketGate(page)
        log_in(page, name)
        join_room(page, room, name)
        expect(message_item(page, room, first)).to_have_count(1)
        epoch = room_state(page, room, "epoch")
        assert epoch and isinstance(epoch, str)
        last_seen = room_state(page, room, "lastId")
        assert room_state(page, LOBBY, "epoch")

        go_offline(page, gate)
        texts = [f"{tag} {n:03d}" for n in range(130)]
        run_async(lambda: post(url, room, texts))
        joins_before = len(gate.joins_of(room))
        go_online(page, gate, name)

        # The resume said where it stood: the lobby's in the URL, the room's in its join.
        assert re.search(r"[?&]after=[0-9]+-[0-9]+", gate.urls[-1]), gate.urls
        assert re.search(r"[?&]epoch=[0-9A-Za-z]+", gate.urls[-1]), gate.urls
        resume = gate.joins_of(room)[joins_before:]
        assert resume and resume[0].get("after") == last_seen and resume[0].get("epoch") == epoch

        log = page.locator(f'#messages ol.room-log[data-room="{room}"]')
        notice = log.locator(".reset-notice")
        expect(notice).to_have_count(1)
        expect(notice).to_contain_text(RESET_TEXT)
        expect(notice).to_contain_text("trimmed")
        expect(notice).to_be_visible()
        expect(page.locator("#announcer")).to_contain_text(RESET_TEXT)
        expect(message_item(page, room, texts[-1])).to_have_count(1)
        shown = [m["text"] for m in room_messages(page, room)]
        # What was there before the gap is gone; the recent ones, once each, in order.
        assert first not in shown
        assert shown == texts[len(texts) - len(shown):], shown
        ids = log.locator("li.msg").evaluate_all("(items) => items.map((li) => li.dataset.id)")
        assert len(ids) == len(set(ids))
        assert room_state(page, room, "epoch") == epoch  # the room's history did not start over

        # Dismissed by keyboard; the focus goes to the composer.
        notice.get_by_role("button", name=re.compile("^Dismiss notice")).focus()
        page.keyboard.press("Enter")
        expect(notice).to_have_count(0)
        expect(page.locator("#text")).to_be_focused()

        after = f"{tag} after the reset"
        say(page, after)
        expect(message_item(page, room, after)).to_have_count(1)
        expect_outbox_empty(page)
        assert [m["text"] for m in room_messages(page, room)][-1] == after


def resume_into_another_history(open_user: OpenUser) -> tuple[Page, str, str, str]:
    """A page whose epoch for a room is not the room's (as if the room's history had
    started over while it was away) resumes: the join carries that epoch, and the
    page shows the `reset` (lost). Returns the page, its user, the room, and the
    message the page had said there before."""
    name, room = unique("ann"), unique("room")
    page = open_user(1)
    gate = SocketGate(page)
    log_in(page, name)
    join_room(page, room, name)
    hello = f"hello {unique('t')}"
    say(page, hello)
    expect(message_item(page, room, hello)).to_have_count(1)
    # The room had no messages at the first join (its epoch was ""): a resume brings it.
    go_offline(page, gate)
    go_online(page, gate, name)
    page.wait_for_function("(room) => !!window.chatfleet.state.rooms.get(room).epoch", arg=room)
    expect(page.locator(".reset-notice")).to_have_count(0)
    page.evaluate("(room) => { window.chatfleet.state.rooms.get(room).epoch = 'an0ther0epoch'; }",
                  room)
    joins_before = len(gate.joins_of(room))
    go_offline(page, gate)
    go_online(page, gate, name)
    resume = gate.joins_of(room)[joins_before:]
    assert resume and resume[0].get("epoch") == "an0ther0epoch", resume
    notice = page.locator(f'#messages ol.room-log[data-room="{room}"] .reset-notice')
    expect(notice).to_contain_text(RESET_TEXT)
    expect(notice).to_contain_text("lost")
    return page, name, room, hello


def test_a_resume_into_another_history_says_it_was_lost(open_user: OpenUser) -> None:
    page, name, room, hello = resume_into_another_history(open_user)
    notice = page.locator(f'#messages ol.room-log[data-room="{room}"] .reset-notice')
    notice.get_by_role("button", name=re.compile("^Dismiss notice")).click()
    expect(notice).to_have_count(0)
    expect(page.locator("#text")).to_be_focused()
    # The page chats on in that room; nothing is shown twice.
    again = f"still here {unique('t')}"
    say(page, again)
    expect(message_item(page, room, again)).to_have_count(1)
    expect_outbox_empty(page)
    texts = [m["text"] for m in room_messages(page, room)]
    assert len(texts) == len(set(texts)) and texts[-1] == again, texts
    page.wait_for_function("(room) => !!window.chatfleet.state.rooms.get(room).epoch", arg=room)


def test_a_lost_resume_brings_the_recent_messages_as_a_plain_join(open_user: OpenUser) -> None:
    page, name, room, hello = resume_into_another_history(open_user)
    # The server handles a socket's frames in order: once this message is shown,
    # everything the resume's join sent has arrived.
    marker = f"marker {unique('t')}"
    say(page, marker)
    expect(message_item(page, room, marker)).to_have_count(1)
    assert [m["text"] for m in room_messages(page, room)] == [hello, marker]


def test_a_resume_brings_the_edits_and_deletes_made_while_away(open_user: OpenUser) -> None:
    """Bob's page is offline while Ann edits one message and deletes another: when it
    is back, its resume (join with `after`) brings both, applied in place."""
    ann_name, bob_name, room = unique("ann"), unique("bob"), unique("room")
    ann, bob = open_user(1), open_user(2)
    gate = SocketGate(bob)
    log_in(ann, ann_name)
    log_in(bob, bob_name)
    join_room(ann, room, ann_name)
    join_room(bob, room, bob_name)
    draft, final, secret = (f"draft {unique('t')}", f"final {unique('t')}",
                            f"oops {unique('t')}")
    say(ann, draft)
    say(ann, secret)
    wait_for_room_message(bob, room, ann_name, secret)

    go_offline(bob, gate)
    item = message_item(ann, room, draft)
    item.hover()
    item.get_by_role("button", name="Edit your message").click()
    editor = ann.get_by_role("textbox", name="Edit your message")
    editor.fill(final)
    editor.press("Enter")
    expect(message_item(ann, room, final).locator(".edited-mark")).to_have_text("(edited)")
    item = message_item(ann, room, secret)
    item.hover()
    item.get_by_role("button", name="Delete your message").click()
    item.get_by_role("button", name="Delete", exact=True).click()
    expect(message_item(ann, room, secret)).to_have_count(0)

    # Bob still shows what he had until his page is back.
    expect(message_item(bob, room, draft)).to_have_count(1)
    go_online(bob, gate, bob_name)
    edited = message_item(bob, room, final)
    expect(edited).to_have_count(1)
    expect(edited.locator(".edited-mark")).to_have_text("(edited)")
    expect(message_item(bob, room, secret)).to_have_count(0)
    assert [m["text"] for m in room_messages(bob, room)] == [final]
    expect(bob.locator(".reset-notice")).to_have_count(0)
    expect_nowhere(bob, secret)
