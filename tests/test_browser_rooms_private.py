"""Private rooms, direct messages and moderation in the real page (docs/protocol.md:
Rooms, roles and moderation): a private room made with the join form's "Private" box
and an invitation, a direct message opened with a person's "Message" action, and a
moderator's kick, ban, mute and role change, each felt by the other user's page.

Every user is a browser context of its own, pinned to a chat instance by HAProxy's
cookie, so what one user does reaches the other across processes. Names are unique
per test; every wait is on a condition with a generous timeout, never a fixed sleep.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, WebSocket, expect

from tests.browser_support import (
    OpenUser,
    browser,
    exactly,
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
NOT_ALLOWED_IN = "you may not enter this room"  # the server's reason for a refused join


class FramesSeen:
    """Every frame the page's sockets received, as parsed JSON (recorded from the
    first socket on: attach before logging in)."""

    def __init__(self, page: Page) -> None:
        self.frames: list[dict[str, Any]] = []
        page.on("websocket", self._watch)

    def _watch(self, socket: WebSocket) -> None:
        socket.on("framereceived", self._keep)

    def _keep(self, payload: str | bytes) -> None:
        try:
            self.frames.append(json.loads(payload))
        except ValueError:
            pass

    def mentioning(self, *needles: str) -> list[dict[str, Any]]:
        """Frames that mention any needle; a refusal naming the room the client
        itself asked for (`error` with `room`) tells it nothing new and is left out."""
        def told(f: dict[str, Any]) -> str:
            return json.dumps({k: v for k, v in f.items()
                               if not (f.get("type") == "error" and k == "room")})
        return [f for f in self.frames if any(n in told(f) for n in needles)]


def rooms_listed(page: Page) -> list[str]:
    result: list[str] = page.locator("#rooms button[data-room]").evaluate_all(
        "(buttons) => buttons.map((b) => b.dataset.room)"
    )
    return result


def dm_button(page: Page, other: str) -> Locator:
    """The direct message with `other` in the "Direct messages" list (shown by name)."""
    name = page.locator(".room-name", has_text=exactly(other))
    return page.locator("#dms button[data-room]", has=name)


def alert(page: Page, text: str) -> Locator:
    """A shown alert (role=alert region) with exactly `text`."""
    return page.locator("#alerts[role=alert] .banner-text", has_text=exactly(text))


def notice(page: Page, text: str) -> Locator:
    """A shown notice (the polite status region) with exactly `text`."""
    return page.locator("#notices[role=status] .banner-text", has_text=exactly(text))


def joined_here(page: Page, room: str) -> None:
    """The page has joined `room` on its socket (its presence came)."""
    page.wait_for_function(
        "(room) => window.chatfleet.state.rooms.get(room)?.confirmed === true", arg=room
    )


def expect_all_answered(page: Page) -> None:
    """Every frame the page sent that the server answers has had its answer: the
    page pairs each refusal with the oldest of them, so none may linger."""
    page.wait_for_function("() => window.chatfleet.state.requests.length === 0")


def known_rooms(page: Page) -> list[str]:
    result: list[str] = page.evaluate("() => [...window.chatfleet.state.rooms.keys()]")
    return result


def create_private(page: Page, room: str, me: str) -> None:
    """Create `room` as a private room with the join form's "Private" box."""
    page.get_by_label("Private (invite only)").check()
    expect(page.locator("#join-button")).to_have_text("Create")
    page.get_by_label("Join or create a room").fill(room)
    page.get_by_label("Join or create a room").press("Enter")
    expect(page.locator("#room-title")).to_have_text(f"#{room}")
    expect(room_button(page, room)).to_have_attribute("aria-current", "true")
    expect(page.locator("#people li", has_text=exactly(me))).to_have_count(1)
    # The form is back to plain joins for the next room.
    expect(page.get_by_label("Private (invite only)")).not_to_be_checked()
    expect(page.locator("#join-button")).to_have_text("Join")


def refused_join(page: Page, room: str) -> None:
    """Type `room` in the join form: the refusal is shown, and the room is not kept."""
    page.get_by_label("Join or create a room").fill(room)
    page.get_by_label("Join or create a room").press("Enter")
    expect(alert(page, f"You cannot join #{room}: {NOT_ALLOWED_IN}.")).to_be_visible()
    expect(room_button(page, room)).to_have_count(0)
    expect(page.locator("#room-title")).to_have_text(f"#{LOBBY}")
    expect(page.locator(f'ol.room-log[data-room="{room}"]')).to_have_count(0)
    assert room not in known_rooms(page)


def person_actions(page: Page, user: str) -> Locator:
    """Open `user`'s actions from the people list; the panel, focused on its first action."""
    person = page.locator("#people button.person", has_text=exactly(user))
    person.click()
    expect(person).to_have_attribute("aria-expanded", "true")
    panel = page.get_by_role("region", name=user)
    expect(panel).to_be_visible()
    expect(panel.get_by_role("button", name=f"Message {user}")).to_be_focused()
    return panel


def test_private_room_is_seen_by_its_members_only(open_user: OpenUser) -> None:
    room = unique("priv")
    ann_name, bob_name, cat_name = unique("ann"), unique("bob"), unique("cat")
    ann, bob, cat = open_user(1), open_user(2), open_user(2)
    cat_saw = FramesSeen(cat)
    log_in(ann, ann_name)
    log_in(bob, bob_name)
    log_in(cat, cat_name)

    create_private(ann, room, ann_name)
    expect(ann.locator("#invite")).to_be_visible()
    before = f"before the invite {unique('t')}"
    say(ann, before)
    wait_for_room_message(ann, room, ann_name, before)

    # Ann invites Bob by name; Bob's page says so, lists the room and joins it,
    # without taking him away from the lobby.
    ann.get_by_label("Invite to this room").fill(bob_name)
    ann.get_by_label("Invite to this room").press("Enter")
    expect(notice(ann, f"{bob_name} is invited to #{room}.")).to_be_visible()
    expect(ann.get_by_label("Invite to this room")).to_have_value("")
    expect(notice(bob, f"{ann_name} invited you to #{room}.")).to_be_visible()
    expect(room_button(bob, room)).to_be_visible()
    joined_here(bob, room)
    expect(bob.locator("#room-title")).to_have_text(f"#{LOBBY}")
    # What was said before he came is there for him, and unread.
    expect(room_button(bob, room).locator(".unread")).to_have_text("1")
    wait_for_room_message(bob, room, ann_name, before)

    # Ann writes while Bob is in the lobby: one more unread; reading clears it.
    secret = f"just us {unique('t')}"
    say(ann, secret)
    expect(room_button(bob, room).locator(".unread")).to_have_text("2")
    switch_room(bob, room)
    expect(room_button(bob, room).locator(".unread")).to_have_count(0)
    expect_people(bob, [ann_name, bob_name])
    assert [m["text"] for m in room_messages(bob, room)] == [before, secret]
    answer = f"only you and me {unique('t')}"
    say(bob, answer)
    wait_for_room_message(ann, room, bob_name, answer)

    # Cat sees nothing of it: not listed, and a join by name is refused.
    assert room not in rooms_listed(cat)
    refused_join(cat, room)
    after = f"after the stranger tried {unique('t')}"
    say(ann, after)
    wait_for_room_message(bob, room, ann_name, after)
    expect_outbox_empty(ann)
    expect_outbox_empty(bob)
    # Nothing of the room ever reached Cat's socket: no message, no presence
    # (the refusal names only the room Cat asked for).
    assert cat_saw.frames, "no frames recorded for Cat"
    assert cat_saw.mentioning(room, before, secret, answer, after) == []
    for text in (before, secret, answer, after):
        expect(cat.locator("#messages .msg", has_text=text)).to_have_count(0)

    # Bob's membership outlives his page: after a reload the room is listed
    # (from the hello), joined again, and its messages are not unread any more.
    bob.reload()
    expect(bob.locator("#people li", has_text=exactly(bob_name))).to_have_count(1)
    expect(room_button(bob, room)).to_be_visible()
    joined_here(bob, room)
    expect(bob.locator(f'ol.room-log[data-room="{room}"] .msg')).to_have_count(4)
    expect(room_button(bob, room).locator(".unread")).to_have_count(0)
    for page in (ann, bob, cat):
        expect_all_answered(page)


def test_direct_message_from_the_people_list(open_user: OpenUser) -> None:
    room = unique("room")
    ann, ann_name, bob, bob_name = two_logged_in(open_user)
    join_room(ann, room, ann_name)
    join_room(bob, room, bob_name)
    expect_people(ann, [ann_name, bob_name])
    expect(ann.locator("#dms-empty")).to_be_visible()

    # Keyboard only: Bob's name in Ann's people list opens his actions, the focus
    # goes to the first one ("Message"), Enter asks for the direct message.
    person = ann.locator("#people button.person", has_text=exactly(bob_name))
    person.focus()
    ann.keyboard.press("Enter")
    panel = ann.get_by_role("region", name=bob_name)
    expect(panel).to_be_visible()
    message = panel.get_by_role("button", name=f"Message {bob_name}")
    expect(message).to_be_focused()
    ann.keyboard.press("Enter")

    # Ann is in the direct message: titled by Bob's name, listed under "Direct
    # messages" by his name (not the server's room name), and typing goes there.
    expect(ann.locator("#room-title")).to_have_text(f"@{bob_name}")
    expect(dm_button(ann, bob_name)).to_have_attribute("aria-current", "true")
    expect(ann.locator("#text")).to_be_focused()
    expect(ann.locator("#dms-empty")).to_be_hidden()
    expect(panel).to_be_hidden()
    dm: str = ann.evaluate("() => window.chatfleet.state.current")
    assert dm.startswith("@") and dm not in rooms_listed(ann)
    expect(dm_button(ann, bob_name)).to_have_attribute("data-room", dm)
    expect(ann.locator("#leave-room")).to_be_hidden()
    expect(ann.locator("#invite")).to_be_hidden()
    joined_here(ann, dm)

    # Bob is told, and has it listed by Ann's name, while he stays where he was.
    expect(notice(bob, f"{ann_name} started a direct message with you.")).to_be_visible()
    expect(dm_button(bob, ann_name)).to_have_attribute("data-room", dm)
    joined_here(bob, dm)
    expect(bob.locator("#room-title")).to_have_text(f"#{room}")
    assert dm not in rooms_listed(bob)

    psst = f"psst {unique('t')}"
    ann.keyboard.type(psst)
    ann.keyboard.press("Enter")
    wait_for_room_message(ann, dm, ann_name, psst)
    badge = dm_button(bob, ann_name).locator(".unread")
    expect(badge).to_have_text("1")
    expect(dm_button(bob, ann_name)).to_have_attribute(
        "aria-label", f"Direct message with {ann_name}, 1 unread")
    # The message is only in the direct message, never in the room they share.
    expect(bob.locator("#messages .msg:visible", has_text=psst)).to_have_count(0)

    dm_button(bob, ann_name).click()
    expect(bob.locator("#room-title")).to_have_text(f"@{ann_name}")
    expect(badge).to_have_count(0)
    wait_for_room_message(bob, dm, ann_name, psst)
    expect(bob.locator("#messages .msg:visible", has_text=psst)).to_be_visible()
    reply = f"hello you {unique('t')}"
    say(bob, reply)
    wait_for_room_message(ann, dm, bob_name, reply)
    assert [m["text"] for m in room_messages(ann, dm)] == [psst, reply]
    assert [m["text"] for m in room_messages(bob, dm)] == [psst, reply]
    assert not {psst, reply} & {m["text"] for m in room_messages(ann, room)}
    # In a direct message the other person has no actions (nothing to moderate).
    expect(bob.locator("#people button.person")).to_have_count(0)

    # Bob's "Message" on Ann, back in the shared room, opens the same one again.
    switch_room(bob, room)
    person_actions(bob, ann_name).get_by_role("button", name=f"Message {ann_name}").click()
    expect(bob.locator("#room-title")).to_have_text(f"@{ann_name}")
    assert bob.evaluate("() => window.chatfleet.state.current") == dm
    expect(bob.locator("#dms button[data-room]")).to_have_count(1)
    for page in (ann, bob):
        expect_all_answered(page)


def test_owner_kicks_then_bans_a_watcher(open_user: OpenUser) -> None:
    room = unique("room")
    owner, owner_name, watcher, watcher_name = two_logged_in(open_user, "own", "wat")
    join_room(owner, room, owner_name)  # the first joiner owns a new public room
    join_room(watcher, room, watcher_name)
    expect_people(owner, [owner_name, watcher_name])

    # Kick: the watcher is told (an alert) and the room leaves the page.
    person_actions(owner, watcher_name).get_by_role("button", name=f"Kick {watcher_name}").click()
    expect(notice(owner, f"{watcher_name} was removed from #{room}.")).to_be_visible()
    expect(alert(watcher, f"{owner_name} removed you from #{room}.")).to_be_visible()
    expect(room_button(watcher, room)).to_have_count(0)
    expect(watcher.locator("#room-title")).to_have_text(f"#{LOBBY}")
    expect(watcher.locator(f'ol.room-log[data-room="{room}"]')).to_have_count(0)
    assert room not in known_rooms(watcher)
    expect_people(owner, [owner_name])
    # The owner's actions closed with the person gone; the focus did not fall to the page.
    expect(owner.locator("#person-actions")).to_be_hidden()
    expect(owner.locator("#people-title")).to_be_focused()

    # A kick is not a ban: the room is public, the watcher comes back.
    join_room(watcher, room, watcher_name)
    expect_people(owner, [owner_name, watcher_name])
    back = f"back again {unique('t')}"
    say(watcher, back)
    wait_for_room_message(owner, room, watcher_name, back)

    # Ban: told, the room leaves the page, and joining again is refused.
    person_actions(owner, watcher_name).get_by_role("button", name=f"Ban {watcher_name}").click()
    expect(notice(owner, f"{watcher_name} is banned from #{room}.")).to_be_visible()
    expect(alert(watcher, f"{owner_name} banned you from #{room}.")).to_be_visible()
    expect(room_button(watcher, room)).to_have_count(0)
    expect(watcher.locator("#room-title")).to_have_text(f"#{LOBBY}")
    expect_people(owner, [owner_name])
    refused_join(watcher, room)
    # The watcher sees nothing more of the room.
    after = f"after the ban {unique('t')}"
    say(owner, after)
    wait_for_room_message(owner, room, owner_name, after)
    expect_outbox_empty(owner)
    assert room not in known_rooms(watcher)
    expect(watcher.locator("#messages .msg", has_text=after)).to_have_count(0)
    # Each alert can be dismissed; the focus goes on to the next one, then the composer.
    alerts = watcher.locator("#alerts .banner")
    count = alerts.count()
    assert count >= 2
    for left in range(count - 1, -1, -1):
        alerts.last.get_by_role("button", name="Dismiss").click()
        expect(alerts).to_have_count(left)
    expect(watcher.locator("#text")).to_be_focused()
    for page in (owner, watcher):
        expect_all_answered(page)


def test_mute_roles_and_refusals_are_shown(open_user: OpenUser) -> None:
    room = unique("room")
    owner, owner_name, member, member_name = two_logged_in(open_user, "own", "mem")
    join_room(owner, room, owner_name)
    join_room(member, room, member_name)
    expect_people(member, [owner_name, member_name])

    # A plain member may not kick: the server refuses, the page says so clearly.
    person_actions(member, owner_name).get_by_role("button", name=f"Kick {owner_name}").click()
    expect(alert(member, f"Could not kick {owner_name} from #{room}: "
                         "only the owner and moderators may do that.")).to_be_visible()
    # Escape closes the actions, back on the person's name.
    member.keyboard.press("Escape")
    expect(member.locator("#person-actions")).to_be_hidden()
    expect(member.locator("#people button.person", has_text=exactly(owner_name))).to_be_focused()

    # The owner mutes the member for a minute (the duration picker's first choice).
    panel = person_actions(owner, member_name)
    expect(panel.get_by_label("Mute for")).to_have_value("60")
    panel.get_by_role("button", name=f"Mute {member_name}").click()
    expect(notice(owner, f"{member_name} is muted in #{room} for 1 minute.")).to_be_visible()

    muted = f"said while muted {unique('t')}"
    member.locator("#text").fill(muted)
    member.locator("#text").press("Enter")
    expect(alert(member, f"Your message to #{room} was not sent: "
                         "you are muted in this room for now.")).to_be_visible()
    # Not left to resend forever: out of the outbox, back in the composer.
    expect_outbox_empty(member)
    expect(member.locator("#text")).to_have_value(muted)

    # Lifting it: the picker's last choice, the button says what it does.
    panel.get_by_label("Mute for").select_option(label="Lift mute")
    lift = panel.get_by_role("button", name=f"Lift mute of {member_name}")
    expect(lift).to_have_text("Lift mute")
    lift.click()
    expect(notice(owner, f"{member_name} may write in #{room} again.")).to_be_visible()
    member.locator("#text").press("Enter")
    expect(member.locator("#text")).to_have_value("")
    wait_for_room_message(owner, room, member_name, muted)
    expect_outbox_empty(member)
    assert [m["text"] for m in room_messages(owner, room)].count(muted) == 1

    # Make moderator: done; a moderator still may not kick the owner.
    panel.get_by_role("button", name=f"Make {member_name} a moderator").click()
    expect(notice(owner, f"{member_name} is now a moderator of #{room}.")).to_be_visible()
    person_actions(member, owner_name).get_by_role("button", name=f"Kick {owner_name}").click()
    expect(alert(member, f"Could not kick {owner_name} from #{room}: "
                         f"you may not do that to {owner_name}.")).to_be_visible()
    expect_people(owner, [owner_name, member_name])
    for page in (owner, member):
        expect_all_answered(page)
