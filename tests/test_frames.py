"""Client frame parsing: every refusal names the right code (docs/protocol.md)."""

from __future__ import annotations

import json

import pytest

from handlers.frames import MAX_TEXT_CHARS, Chat, FrameError, Join, Leave, parse_frame


def refused(raw: str | bytes) -> str:
    with pytest.raises(FrameError) as caught:
        parse_frame(raw)
    return caught.value.code


def test_chat_join_leave_parse() -> None:
    assert parse_frame('{"type":"chat","room":"lobby","text":"hi","cid":"c1"}') == Chat(
        "lobby", "hi", "c1"
    )
    assert parse_frame('{"type":"join","room":"r1","after":"1700000000000-2"}') == Join(
        "r1", (1700000000000, 2)
    )
    assert parse_frame('{"type":"join","room":"r1"}') == Join("r1", None)
    assert parse_frame('{"type":"leave","room":"r1"}') == Leave("r1")


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1,2]",
        '"text"',
        '{"type":"dance"}',
        '{"room":"lobby"}',
        '{"type":"chat","room":"lobby","text":5}',
        '{"type":"chat","room":"lobby","text":"   "}',
        '{"type":"chat","room":"lobby","text":"x","cid":7}',
        '{"type":"chat","room":"lobby","text":"x","cid":"' + "c" * 65 + '"}',
        '{"type":"join","room":"lobby","after":"yesterday"}',
        '{"type":"join","room":"lobby","after":12}',
        '{"type":"join","room":"lobby","after":"' + "9" * 60 + '"}',
        "[" * 100_000 + "]" * 100_000,
        # Lone surrogates: JSON can spell them, UTF-8 cannot carry them.
        '{"type":"chat","room":"lobby","text":"\\ud800"}',
        '{"type":"chat","room":"lobby","text":"ok \\udfff ok"}',
        '{"type":"chat","room":"lobby","text":"x","cid":"\\ud800"}',
        # Ids Redis itself would refuse (parts past 2**64 - 1), and non-ASCII digits.
        '{"type":"join","room":"lobby","after":"18446744073709551616-0"}',
        '{"type":"join","room":"lobby","after":"1-18446744073709551616"}',
        '{"type":"history","room":"lobby","before":"99999999999999999999"}',
        '{"type":"join","room":"lobby","after":"\u0663-1"}',
        '{"type":"join","room":1e999999}',
    ],
)
def test_malformed_frames_are_bad_frame(raw: str) -> None:
    assert refused(raw) == "bad_frame"


def test_binary_frame_is_bad_frame() -> None:
    assert refused(b'{"type":"chat"}') == "bad_frame"


@pytest.mark.parametrize("room", ["", "a" * 33, "has space", "{tag}", "bad/slash", "ünï"])
def test_bad_room_names(room: str) -> None:
    assert refused(json.dumps({"type": "join", "room": room})) == "bad_room"


def test_text_limit_is_exact() -> None:
    at_limit = json.dumps({"type": "chat", "room": "lobby", "text": "x" * MAX_TEXT_CHARS})
    assert isinstance(parse_frame(at_limit), Chat)
    over = json.dumps({"type": "chat", "room": "lobby", "text": "x" * (MAX_TEXT_CHARS + 1)})
    assert refused(over) == "too_large"
