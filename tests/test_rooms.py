"""Private rooms, invitations, roles, kick, ban, mute, direct messages and the audit
trail (docs/protocol.md: Rooms, roles and moderation), through both instances.

Each user here talks to the instance given (`at`), so every promise is checked
across processes: the order is given on one, felt on the other.
"""

from __future__ import annotations

from typing import Any

import pytest

from chatclient import ChatSocket
from stack.run import Stack
from tests.chat_users import people
from tests.conftest import lone_instance, unique

__all__ = ["people"]  # the fixture, imported for pytest to find

pytestmark = pytest.mark.cluster



async def test_a_private_room_is_closed_to_non_members_everywhere(people: Any) -> None:
    owner, stranger, far = await people(0), await people(0), await people(1)
    room = unique("priv")
    await owner.send(type="create", room=room, private=True)
    assert (await owner.sock.next_of("presence", room=room))["users"] == [owner.name]
    await owner.say(room, "secret one")
    for other in (stranger, far):
        assert (await other.join(room))["code"] == "forbidden"
        assert await other.error(type="history", room=room) == "forbidden"
        assert await other.error(type="chat", room=room, text="hi", cid="x") == "forbidden"
        assert await other.error(type="typing", room=room) in ("not_joined", "forbidden")
        assert await other.error(type="invite", room=room, user=other.name) == "forbidden"
    assert await owner.error(type="create", room=room, private=True) == "room_exists"
    for other in (stranger, far):
        assert not other.texts(room)


async def test_an_invitation_reaches_the_invitee_on_the_other_instance(people: Any) -> None:
    owner, guest = await people(0), await people(1)
    room = await owner.private_room()
    await owner.say(room, "before the invite")
    await owner.done(type="invite", room=room, user=guest.name)
    invited = await guest.sock.next_of("invited", room=room)
    assert invited["by"] == owner.name
    assert (await guest.join(room))["type"] == "presence"
    assert "before the invite" in guest.texts(room)
    await owner.say(room, "after the invite")
    await guest.sock.next(lambda f: f.get("text") == "after the invite")
    # A new socket of the guest is told of the room in its hello.
    again = await ChatSocket.connect(guest.http)
    try:
        assert room in (await again.next_of("hello"))["rooms"]
    finally:
        again.close()


async def test_roles_decide_who_may_moderate_whom(people: Any) -> None:
    owner, mod, other_mod, member = await people(0), await people(1), await people(0), \
        await people(1)
    room = await owner.private_room(mod, other_mod, member)
    await owner.done(type="role", room=room, user=mod.name, role="moderator")
    await owner.done(type="role", room=room, user=other_mod.name, role="moderator")
    assert await member.error(type="invite", room=room, user=unique("x")) == "forbidden"
    assert await member.error(type="kick", room=room, user=mod.name) == "forbidden"
    assert await mod.error(type="role", room=room, user=member.name, role="moderator") \
        == "forbidden"
    for target in (owner, other_mod):
        for kind in ("kick", "ban"):
            assert await mod.error(type=kind, room=room, user=target.name) == "forbidden"
        assert await mod.error(type="mute", room=room, user=target.name, seconds=60) \
            == "forbidden"
    await mod.done(type="invite", room=room, user=unique("friend"))
    await mod.done(type="mute", room=room, user=member.name, seconds=60)
    assert await owner.error(type="role", room=room, user=mod.name, role="admin") == "bad_frame"


async def test_a_kick_cuts_every_socket_off_the_room_on_every_instance(
    people: Any, stack: Stack
) -> None:
    owner, target = await people(0), await people(0)
    room = unique("pub")
    assert (await owner.join(room))["type"] == "presence"  # the first joiner owns it
    second = await people(1, name=target.name)  # the same user on the other instance
    for user in (target, second):
        assert (await user.join(room))["type"] == "presence"
    await owner.done(type="kick", room=room, user=target.name)
    for user in (target, second):
        kicked = await user.sock.next_of("kicked", room=room)
        assert kicked["by"] == owner.name
    await owner.say(room, "after the kick")
    marker = await owner.say("lobby", unique("marker"))
    for user in (target, second):
        await user.sock.next(lambda f: f.get("id") == marker)
        assert "after the kick" not in user.texts(room)
    # A public room: the kicked user may come back.
    assert (await target.join(room))["type"] == "presence"


async def test_a_ban_holds_until_unbanned(people: Any) -> None:
    owner, target = await people(1), await people(0)
    room = unique("pub")
    await owner.join(room)
    await target.join(room)
    await owner.done(type="ban", room=room, user=target.name)
    assert (await target.sock.next_of("kicked", room=room))["ban"] is True
    assert (await target.join(room))["code"] == "forbidden"
    assert await target.error(type="chat", room=room, text="let me in", cid="c") == "forbidden"
    assert await target.error(type="history", room=room) == "forbidden"
    await owner.done(type="unban", room=room, user=target.name)
    assert (await target.join(room))["type"] == "presence"


async def test_a_kicked_member_of_a_private_room_is_a_member_no_more(people: Any) -> None:
    owner, guest = await people(0), await people(1)
    room = await owner.private_room(guest)
    await guest.join(room)
    await owner.done(type="kick", room=room, user=guest.name)
    await guest.sock.next_of("kicked", room=room)
    assert (await guest.join(room))["code"] == "forbidden"
    again = await ChatSocket.connect(guest.http)
    try:
        assert room not in (await again.next_of("hello"))["rooms"]
    finally:
        again.close()


async def test_mute_for_a_while_and_lifted(people: Any) -> None:
    owner, target = await people(0), await people(1)
    room = unique("pub")
    await owner.join(room)
    await target.join(room)
    await owner.done(type="mute", room=room, user=target.name, seconds=600)
    assert await target.error(type="chat", room=room, text="hello?", cid="m1") == "muted"
    assert (await target.join(room))["type"] == "presence"  # a muted user still reads
    await owner.done(type="mute", room=room, user=target.name, seconds=0)
    await target.say(room, unique("free"))
    for seconds in (-1, 10**9, "60", 1.5, True):
        assert await owner.error(type="mute", room=room, user=target.name,
                                 seconds=seconds) == "bad_frame"


async def test_a_direct_message_room_is_the_pairs_alone(people: Any) -> None:
    ann, bob, eve = await people(0), await people(1), await people(0)
    await ann.send(type="dm", user=bob.name)
    room = (await ann.sock.next_of("dm", user=bob.name))["room"]
    assert (await bob.sock.next_of("invited", room=room))["by"] == ann.name
    await bob.send(type="dm", user=ann.name)
    assert (await bob.sock.next_of("dm", user=ann.name))["room"] == room
    for user in (ann, bob):
        assert (await user.join(room))["type"] == "presence"
    await ann.say(room, "just us")
    await bob.sock.next(lambda f: f.get("text") == "just us")
    assert (await eve.join(room))["code"] == "forbidden"
    assert await ann.error(type="invite", room=room, user=eve.name) == "forbidden"
    assert await ann.error(type="dm", user=ann.name) == "bad_frame"
    assert not eve.texts(room)
    again = await ChatSocket.connect(bob.http)
    try:
        assert room in (await again.next_of("hello"))["rooms"]
    finally:
        again.close()


async def test_bad_room_frames_get_their_error_and_change_nothing(people: Any) -> None:
    owner = await people(0)
    room = unique("pub")
    await owner.join(room)
    assert await owner.error(type="kick", room=unique("none"), user="x") == "bad_room"
    assert await owner.error(type="kick", room="no such room!", user="x") == "bad_room"
    assert await owner.error(type="kick", room=room, user="not a name") == "unknown_user"
    assert await owner.error(type="kick", room=room, user=owner.name) == "bad_frame"
    assert await owner.error(type="invite", room=room, user=unique("x")) == "bad_room"
    assert await owner.error(type="create", room="@a+b", private=True) == "bad_room"
    assert await owner.error(type="create", room=room, private="yes") == "bad_frame"
    assert await owner.error(type="join", room="@nobody+else") in ("bad_room", "forbidden")
    await owner.say(room, "still here")  # the socket stayed open


async def test_the_audit_trail_is_for_the_owner_and_moderators(people: Any) -> None:
    owner, target = await people(0), await people(1)
    room = unique("pub")
    await owner.join(room)
    await target.join(room)
    await owner.done(type="mute", room=room, user=target.name, seconds=30)
    await owner.done(type="kick", room=room, user=target.name)
    await owner.send(type="audit", room=room)
    entries = (await owner.sock.next_of("audit", room=room))["entries"]
    assert [(e["by"], e["action"], e["user"]) for e in entries] == [
        (owner.name, "mute", target.name), (owner.name, "kick", target.name)]
    assert entries[0]["seconds"] == "30" and int(entries[0]["ts"]) > 0
    assert await target.error(type="audit", room=room) == "forbidden"


async def test_an_admin_may_moderate_every_room(stack: Stack, people: Any) -> None:
    boss = unique("boss")
    with lone_instance(stack, f"--admins={boss}") as url:
        owner, admin = await people(0), await people(url=url, name=boss)
        room = unique("priv")
        await owner.send(type="create", room=room, private=True)
        await owner.sock.next_of("presence", room=room)
        assert (await admin.join(room))["type"] == "presence"  # admins read every room
        await admin.done(type="kick", room=room, user=owner.name)
        await owner.sock.next_of("kicked", room=room)
        await admin.send(type="audit", room=room)
        assert (await admin.sock.next_of("audit", room=room))["entries"]


async def test_a_member_kicked_while_away_is_not_offered_the_room_again(people: Any) -> None:
    """Its logins' lists of rooms to rejoin lose the room too, connected or not."""
    owner, guest = await people(0), await people(1)
    room = await owner.private_room(guest)
    await guest.join(room)  # now also in this login's rooms to rejoin
    guest.sock.close()
    await owner.done(type="kick", room=room, user=guest.name)
    again = await ChatSocket.connect(guest.http)
    try:
        assert room not in (await again.next_of("hello"))["rooms"]
    finally:
        again.close()
