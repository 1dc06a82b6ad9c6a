"""A model of who may read each room, against the real stack (hypothesis stateful).

Random users (each with one socket, on alternating instances) send random
create / invite / role / kick / ban / unban / join / leave / chat / dm frames.
A small model says what each frame should get and who may read each room.
After every step a lobby marker, published last, is awaited on every socket:
pub/sub keeps order per subscriber connection, so once the marker is in,
everything the step caused has arrived. Then:

- no socket received a frame of a room its user could not read, before or
  after the step;
- every member joined to a room (and allowed in it) received every message
  sent to it;
- every frame's answer (`moderated`, `presence`, `ack`, or its `error` code)
  is the one the model predicts.

`CHAT_MODEL_EXAMPLES` and `CHAT_MODEL_STEPS` make it run longer.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from chatclient import ChatSocket, HttpSession
from rooms.names import dm_room
from stack.run import Stack
from tests.conftest import running_stack, unique

pytestmark = pytest.mark.cluster

USERS = 4
ROOMS = 3
EXAMPLES = int(os.environ.get("CHAT_MODEL_EXAMPLES", "4"))
STEPS = int(os.environ.get("CHAT_MODEL_STEPS", "25"))
RANK = {"owner": 2, "moderator": 1}
STEPS_RUN = [0]  # steps checked over all examples (printed with -s)


@dataclass
class Room:
    name: str
    private: bool
    owner: str | None
    dm: bool = False
    roles: dict[str, str] = field(default_factory=dict)  # user -> moderator | member
    banned: set[str] = field(default_factory=set)

    def may_read(self, user: str) -> bool:
        if user in self.banned:
            return False
        return not self.private or user == self.owner or user in self.roles

    def rank(self, user: str) -> int:
        if user == self.owner:
            return RANK["owner"]
        return RANK.get(self.roles.get(user, ""), 0)


class Client:
    def __init__(self, name: str, http: HttpSession, sock: ChatSocket) -> None:
        self.name, self.http, self.sock = name, http, sock
        self.joined: set[str] = set()


class RoomsModel(RuleBasedStateMachine):
    stack: Stack  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clients: dict[str, Client] = {}
        self.rooms: dict[str, Room] = {}
        self.names: list[str] = []
        self.slots = [unique("m") for _ in range(ROOMS)]
        # room -> {message text: the users joined and allowed when it was sent}
        self.owed: dict[str, dict[str, set[str]]] = {}
        self.sent = 0

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(work, 60))

    @initialize()
    def connect(self) -> None:
        urls = [f"http://127.0.0.1:{p}" for p in self.stack.settings.instance_ports()]

        async def start() -> None:
            for n in range(USERS + 1):  # the last one is the clock
                name = unique(f"m{n}")
                http = HttpSession(urls[n % 2])
                assert (await http.login(name)).code == 302
                sock = await ChatSocket.connect(http)
                await sock.next_of("presence", room="lobby")
                self.clients[name] = Client(name, http, sock)
                self.names.append(name)

        self.run(start())

    def teardown(self) -> None:
        async def close_all() -> None:
            # Inside the machine's loop: a socket's close writes a frame.
            for client in self.clients.values():
                client.sock.close()
                client.http.close()
            await asyncio.sleep(0)

        self.loop.run_until_complete(close_all())
        self.loop.close()

    # -- helpers -------------------------------------------------------------

    def user(self, n: int) -> Client:
        return self.clients[self.names[n % USERS]]

    def settle(self, before: dict[str, bool]) -> None:
        """Publish a lobby marker and wait for it everywhere; then check what
        every socket got in this step against the model."""
        STEPS_RUN[0] += 1
        clock = self.clients[self.names[USERS]]
        self.sent += 1
        marker = f"marker-{self.sent}-{unique('k')}"

        async def wait() -> None:
            await clock.sock.send({"type": "chat", "room": "lobby", "text": marker, "cid": marker})
            for client in self.clients.values():
                await client.sock.next(lambda f: f.get("text") == marker, timeout=30)

        self.run(wait())
        for client in self.clients.values():
            for frame in client.sock.frames[getattr(client, "checked", 0):]:
                room = frame.get("room")
                if frame["type"] not in ("chat", "presence", "joined", "left", "typing") \
                        or room == "lobby" or room not in self.rooms:
                    continue
                allowed = before.get(f"{client.name} {room}", False) or \
                    self.rooms[room].may_read(client.name)
                assert allowed, f"{client.name} got {frame['type']} of {room} it may not read"
            client.checked = len(client.sock.frames)  # type: ignore[attr-defined]

    def snapshot(self) -> dict[str, bool]:
        return {f"{u} {r}": room.may_read(u) for u in self.names[:USERS]
                for r, room in self.rooms.items()}

    def answer(self, client: Client, kinds: tuple[str, ...], room: str | None = None) -> Any:
        def match(f: dict[str, Any]) -> bool:
            if f["type"] == "error":
                return True
            return f["type"] in kinds and (room is None or f.get("room") in (room, None))

        return self.run(client.sock.next(match, timeout=30))

    def moderate(self, actor: Client, frame: dict[str, Any], expected: str | None) -> None:
        """Send a moderation frame; `expected`: None for success, else the error code."""
        before = self.snapshot()
        self.run(actor.sock.send(frame))
        got = self.answer(actor, ("moderated",))
        code = got.get("code") if got["type"] == "error" else None
        assert code == expected, f"{frame} got {got}, model says {expected}"
        self.settle(before)

    # -- rules -----------------------------------------------------------------

    @rule(who=st.integers(0, USERS - 1), slot=st.integers(0, ROOMS - 1), private=st.booleans())
    def create(self, who: int, slot: int, private: bool) -> None:
        actor, name = self.user(who), self.slots[slot]
        before = self.snapshot()
        self.run(actor.sock.send({"type": "create", "room": name, "private": private}))
        got = self.answer(actor, ("presence",), name)
        if name in self.rooms:
            assert got.get("code") == "room_exists", got
        else:
            assert got["type"] == "presence", got
            self.rooms[name] = Room(name, private, actor.name)
            actor.joined.add(name)
        self.settle(before)

    @rule(who=st.integers(0, USERS - 1), slot=st.integers(0, ROOMS - 1))
    def join(self, who: int, slot: int) -> None:
        client, name = self.user(who), self.slots[slot]
        before = self.snapshot()
        self.run(client.sock.send({"type": "join", "room": name}))
        got = self.answer(client, ("presence",), name)
        room = self.rooms.get(name)
        if room is None:  # a first join makes a public room owned by the joiner
            room = self.rooms[name] = Room(name, False, client.name)
        if room.may_read(client.name):
            assert got["type"] == "presence", got
            client.joined.add(name)
        else:
            assert got.get("code") == "forbidden", got
            client.joined.discard(name)
        self.settle(before)

    @precondition(lambda self: any(c.joined for c in self.clients.values()))
    @rule(who=st.integers(0, USERS - 1), data=st.data())
    def leave(self, who: int, data: st.DataObject) -> None:
        client = self.user(who)
        if not client.joined:
            return
        name = data.draw(st.sampled_from(sorted(client.joined)))
        before = self.snapshot()
        self.run(client.sock.send({"type": "leave", "room": name}))
        client.joined.discard(name)
        self.settle(before)

    @precondition(lambda self: bool(self.rooms))
    @rule(who=st.integers(0, USERS - 1), data=st.data())
    def chat(self, who: int, data: st.DataObject) -> None:
        client = self.user(who)
        name = data.draw(st.sampled_from(sorted(self.rooms)))
        room = self.rooms[name]
        self.sent += 1
        text = f"text-{self.sent}-{unique('t')}"
        before = self.snapshot()
        self.run(client.sock.send({"type": "chat", "room": name, "text": text, "cid": text}))
        got = self.answer(client, ("ack",))
        if name in client.joined and room.may_read(client.name):
            assert got["type"] == "ack", got
            readers = {c.name for c in self.clients.values()
                       if name in c.joined and room.may_read(c.name)}

            async def delivered() -> None:
                for reader in readers:
                    await self.clients[reader].sock.next(
                        lambda f: f.get("text") == text, timeout=30)

            self.run(delivered())
        else:
            expected = "forbidden" if not room.may_read(client.name) else "not_joined"
            assert got.get("code") == expected, (got, expected)
        self.settle(before)

    @precondition(lambda self: bool(self.rooms))
    @rule(who=st.integers(0, USERS - 1), whom=st.integers(0, USERS - 1), data=st.data())
    def invite(self, who: int, whom: int, data: st.DataObject) -> None:
        actor, target = self.user(who), self.user(whom)
        name = data.draw(st.sampled_from(sorted(self.rooms)))
        room = self.rooms[name]
        if not room.private:
            expected: str | None = "bad_room"
        elif room.dm or room.rank(actor.name) < RANK["moderator"] \
                or not room.may_read(actor.name):
            expected = "forbidden"
        elif target.name in room.banned:
            expected = "forbidden"
        else:
            expected = None
        self.moderate(actor, {"type": "invite", "room": name, "user": target.name}, expected)
        if expected is None:
            room.roles.setdefault(target.name, "member")

    @precondition(lambda self: bool(self.rooms))
    @rule(who=st.integers(0, USERS - 1), whom=st.integers(0, USERS - 1),
          role=st.sampled_from(["moderator", "member"]), data=st.data())
    def set_role(self, who: int, whom: int, role: str, data: st.DataObject) -> None:
        actor, target = self.user(who), self.user(whom)
        name = data.draw(st.sampled_from(sorted(self.rooms)))
        room = self.rooms[name]
        if room.dm or room.rank(actor.name) < RANK["owner"] \
                or room.rank(actor.name) <= room.rank(target.name):
            expected: str | None = "forbidden"
        else:
            expected = None
        self.moderate(actor, {"type": "role", "room": name, "user": target.name, "role": role},
                      expected)
        if expected is None:
            if role == "member" and not room.private:
                room.roles.pop(target.name, None)
            else:
                room.roles[target.name] = role

    @precondition(lambda self: bool(self.rooms))
    @rule(who=st.integers(0, USERS - 1), whom=st.integers(0, USERS - 1),
          kind=st.sampled_from(["kick", "ban", "unban"]), data=st.data())
    def sanction(self, who: int, whom: int, kind: str, data: st.DataObject) -> None:
        actor, target = self.user(who), self.user(whom)
        name = data.draw(st.sampled_from(sorted(self.rooms)))
        room = self.rooms[name]
        if actor.name == target.name:
            expected: str | None = "bad_frame"
        elif room.rank(actor.name) < RANK["moderator"] \
                or room.rank(actor.name) <= room.rank(target.name):
            expected = "forbidden"
        else:
            expected = None
        self.moderate(actor, {"type": kind, "room": name, "user": target.name}, expected)
        if expected is None:
            if kind == "unban":
                room.banned.discard(target.name)
                return
            if kind == "ban":
                room.banned.add(target.name)
            if room.private or kind == "ban":
                room.roles.pop(target.name, None)
            target.joined.discard(name)

    @rule(who=st.integers(0, USERS - 1), whom=st.integers(0, USERS - 1))
    def direct(self, who: int, whom: int) -> None:
        actor, other = self.user(who), self.user(whom)
        before = self.snapshot()
        self.run(actor.sock.send({"type": "dm", "user": other.name}))
        got = self.answer(actor, ("dm",))
        if actor.name == other.name:
            assert got.get("code") == "bad_frame", got
        else:
            name = dm_room(actor.name, other.name)
            assert got == {"type": "dm", "user": other.name, "room": name}
            if name not in self.rooms:
                self.rooms[name] = Room(name, True, None, dm=True,
                                        roles={actor.name: "member", other.name: "member"})
                self.slots.append(name)
        self.settle(before)

    @invariant()
    def nobody_is_in_a_room_they_may_not_read(self) -> None:
        for client in self.clients.values():
            for name in client.joined:
                assert self.rooms[name].may_read(client.name)


@pytest.fixture(scope="module")
def model_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own without the chat rate limit: the lobby marker after
    every step would soon be refused as a flood."""
    with running_stack(tmp_path_factory.mktemp("model-stack"),
                       env={"CHAT_RATE_LIMIT": "0"}) as running:
        yield running


def test_rooms_against_the_model(model_stack: Stack) -> None:
    RoomsModel.stack = model_stack
    run = RoomsModel.TestCase
    run.settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                            suppress_health_check=list(HealthCheck))
    run().runTest()
    print(f"rooms model: {STEPS_RUN[0]} steps checked")
