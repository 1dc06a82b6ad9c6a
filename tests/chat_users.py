"""Logged-in chat users for protocol tests: one socket each, on the instance asked for.

    async def test_x(people):
        ann, bob = await people(0), await people(1)   # instance 1 and instance 2
        await ann.join(room); await ann.say(room, "hi")

Import the fixture into a test module (`from tests.chat_users import people`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatclient import ChatSocket, HttpSession
from stack.run import Stack
from tests.conftest import unique

Frame = dict[str, Any]


class User:
    """One logged-in user with one socket."""

    def __init__(self, name: str, http: HttpSession, sock: ChatSocket) -> None:
        self.name, self.http, self.sock = name, http, sock

    async def send(self, **frame: Any) -> None:
        await self.sock.send(frame)

    async def error(self, **frame: Any) -> str:
        """Send `frame`; the code of the error it gets."""
        await self.send(**frame)
        code: str = (await self.sock.next_of("error"))["code"]
        return code

    async def done(self, **frame: Any) -> None:
        """Send a moderation frame and wait for its `moderated` answer."""
        await self.send(**frame)
        answer = await self.sock.next(lambda f: f["type"] in ("moderated", "error"))
        assert answer["type"] == "moderated", answer

    async def join(self, room: str, **extra: Any) -> Frame:
        """Join (with `after`, `epoch`, ...); the presence frame, or the error it got."""
        await self.send(type="join", room=room, **extra)
        answer: Frame = await self.sock.next(
            lambda f: (f["type"] == "presence" and f["room"] == room) or f["type"] == "error")
        return answer

    async def say(self, room: str, text: str) -> str:
        await self.send(type="chat", room=room, text=text, cid=text)
        answer = await self.sock.next(
            lambda f: (f["type"] == "ack" and f["cid"] == text) or f["type"] == "error")
        assert answer["type"] == "ack", answer
        message_id: str = answer["id"]
        return message_id

    async def change(self, **frame: Any) -> Frame | None:
        """Send an edit or delete; the error it got, or None once its event came back."""
        await self.sock.send(frame)
        kind = "edited" if frame["type"] == "edit" else "deleted"
        got: Frame = await self.sock.next(
            lambda f: (f["type"] == kind and f["id"] == frame["id"]) or f["type"] == "error")
        return got if got["type"] == "error" else None

    async def private_room(self, *members: User) -> str:
        """A new private room of this user's, with `members` invited; its name."""
        room = unique("priv")
        await self.send(type="create", room=room, private=True)
        await self.sock.next_of("presence", room=room)
        for member in members:
            await self.done(type="invite", room=room, user=member.name)
        return room

    def texts(self, room: str) -> list[str]:
        return [f["text"] for f in self.sock.frames if f["type"] == "chat" and f["room"] == room]

    def text_seen(self) -> str:
        """Everything this socket received, as one string to search."""
        return json.dumps(self.sock.frames)

    def close(self) -> None:
        self.sock.close()
        self.http.close()


async def logged_in(url: str, name: str | None = None) -> User:
    """A user logged in (open mode) at `url`, its socket in the lobby."""
    name = name or unique("u")
    http = HttpSession(url)
    assert (await http.login(name)).code == 302
    sock = await ChatSocket.connect(http)
    await sock.next_of("presence", room="lobby")
    return User(name, http, sock)


@pytest.fixture
async def people(stack: Stack) -> AsyncIterator[Any]:
    """`await people(at=n)`: a new user on instance n (0 or 1), or at `url`; all
    closed at the end."""
    made: list[User] = []
    urls = [f"http://127.0.0.1:{p}" for p in stack.settings.instance_ports()]

    async def make(at: int = 0, name: str | None = None, url: str | None = None) -> User:
        user = await logged_in(url or urls[at], name)
        made.append(user)
        return user

    yield make
    for user in made:
        user.close()
