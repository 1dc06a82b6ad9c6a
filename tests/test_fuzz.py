"""Property-based abuse of a live instance: random frames and forms never hurt it.

Every reply must obey the protocol, the socket stays open (or is closed with
a protocol code), and a normal user on the same process keeps chatting.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatclient import ChatSocket, HttpSession, SocketClosed
from stack.run import Stack
from tests.conftest import unique

SERVER_TYPES = {"hello", "chat", "ack", "joined", "left", "presence", "error", "history", "reset",
                "typing"}
ERROR_CODES = {"bad_frame", "too_large", "rate_limited", "bad_room", "not_joined", "unavailable"}
ALLOWED_CLOSES = {1008, 1009}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
frame_objects = st.fixed_dictionaries(
    {"type": st.sampled_from(["chat", "join", "leave", "hello", "", "CHAT"]) | st.text(max_size=8)},
    optional={
        "room": st.sampled_from(["lobby", "fuzz", "", "a" * 40, "{x}"]) | json_values,
        "text": st.text(max_size=60) | json_values,
        "after": st.sampled_from(["0-0", "1-1", "99999999999999999999-0", "x"]) | json_values,
        "cid": st.text(max_size=70) | json_values,
    },
)
raw_frames = (
    frame_objects.map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=200)
    | st.binary(max_size=64)
    | st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth)
)


def check_reply(frame: dict[str, Any]) -> None:
    assert isinstance(frame, dict) and frame.get("type") in SERVER_TYPES, frame
    if frame["type"] == "error":
        assert frame["code"] in ERROR_CODES, frame
        assert isinstance(frame["reason"], str) and frame["reason"]


async def throw(base_url: str, cookies: dict[str, str], frames: list[str | bytes]) -> None:
    http = HttpSession(base_url)
    http.cookies = dict(cookies)
    sock = await ChatSocket.connect(http)
    try:
        await sock.next_of("presence", room="lobby")
        for raw in frames:
            await sock.send_raw(raw)
        # A frame after the garbage must still be answered: the socket lives.
        # (A history request for a room the garbage never joins: it is always
        # answered `not_joined`, whatever the garbage did; joins would meet the
        # user's join allowance, as the cases come fast.)
        await sock.send({"type": "history", "room": "fuzzcheck", "limit": 1})
        await sock.next(lambda f: f.get("type") == "error" and f.get("code") == "not_joined"
                        and "history" in f.get("reason", ""))
        for frame in sock.frames:
            check_reply(frame)
    except SocketClosed as closed:
        assert closed.code in ALLOWED_CLOSES, closed
    finally:
        sock.close()
        http.close()


async def logged_in(base_url: str) -> dict[str, str]:
    http = HttpSession(base_url)
    await http.login(unique("fz"))
    cookies = dict(http.cookies)
    http.close()
    return cookies


def test_random_frames_never_hurt_the_instance(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.settings.port_base + 1}"
    cookies = asyncio.run(logged_in(base))

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(raw_frames, min_size=1, max_size=8))
    def one_case(frames: list[str | bytes]) -> None:
        asyncio.run(throw(base, cookies, frames))

    one_case()
    asyncio.run(normal_user_still_chats(base))


async def normal_user_still_chats(base: str) -> None:
    http = HttpSession(base)
    await http.login(unique("norm"))
    sock = await ChatSocket.connect(http)
    await sock.next_of("presence", room="lobby")
    await sock.send({"type": "chat", "room": "lobby", "text": "still fine", "cid": "ok-1"})
    ack = await sock.next_of("ack", cid="ok-1")
    assert (await sock.next_of("chat", id=ack["id"]))["text"] == "still fine"
    assert (await http.request("GET", "/healthz")).code == 200
    sock.close()
    http.close()


async def post_form(base: str, form: dict[str, str]) -> int:
    http = HttpSession(base)
    token = await http.xsrf()
    answer = await http.request("POST", "/login", form={**form, "_xsrf": token})
    body = answer.body or b""
    assert b"Traceback" not in body
    http.close()
    return answer.code


def test_random_login_forms_get_302_or_400(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.settings.port_base + 2}"

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(st.sampled_from(["user", "x", "next", "user[]"]), st.text(max_size=80),
                           max_size=3))
    def one_case(form: dict[str, str]) -> None:
        code = asyncio.run(post_form(base, form))
        assert code in (302, 400), (form, code)

    one_case()
