"""The frames written for every message are the same text `json.dumps` would
give (pubsub/codec.py writes them by hand, for speed), for any text at all."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from pubsub.codec import ack_frame, chat_frame, frame

# Stream ids as Redis makes them; text of any characters but lone surrogates
# (a WebSocket text frame cannot carry those).
ids = st.builds(lambda ms, seq: f"{ms}-{seq}", st.integers(0, 2**63 - 1), st.integers(0, 2**64 - 1))
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)


def dumped(body: dict[str, object]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


@given(ids, texts, texts, texts, st.booleans())
def test_a_chat_frame_is_what_json_would_write(msg_id: str, room: str, user: str, text: str,
                                               edited: bool) -> None:
    body: dict[str, object] = {"type": "chat", "id": msg_id, "room": room, "user": user,
                               "text": text, "ts": int(msg_id.split("-")[0]) / 1000}
    if edited:
        body["edited"] = True
    written = chat_frame(msg_id, room, user, text, edited)
    assert written == dumped(body)
    assert json.loads(written) == body


@given(texts, ids)
def test_an_ack_frame_is_what_json_would_write(cid: str, msg_id: str) -> None:
    written = ack_frame(cid, msg_id)
    assert written == frame("ack", cid=cid, id=msg_id)
    assert json.loads(written) == {"type": "ack", "cid": cid, "id": msg_id}


def test_quotes_backslashes_and_controls_are_escaped() -> None:
    written = chat_frame("1-0", "r", "u", 'say "hi"\\\n\x00 ünï 😀')
    assert json.loads(written)["text"] == 'say "hi"\\\n\x00 ünï 😀'
    assert '\\"hi\\"' in written and "\\u0000" in written and "😀" in written
