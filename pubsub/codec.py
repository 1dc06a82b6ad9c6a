"""The message shapes: msgpack between processes, JSON frames to browsers.

Stream ids (`<ms>-<seq>`) order messages within a room; `StreamId` is the
parsed, comparable form so fan-out compares tuples, not strings.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack

StreamId = tuple[int, int]

ZERO_ID: StreamId = (0, 0)

# Two 64-bit numbers and a dash.
MAX_ID_CHARS = 41
# Redis refuses a stream id part past 2**64 - 1 (and an exclusive range from
# the very last id): such an id is the client's mistake (bad_frame), not a
# Redis outage. Real ids' milliseconds are far below 2**63.
MAX_ID_MS = 2**63 - 1
MAX_ID_SEQ = 2**64 - 1


def parse_id(text: str) -> StreamId:
    """`"1700000000000-3"` -> `(1700000000000, 3)`; ValueError if malformed."""
    if len(text) > MAX_ID_CHARS:
        raise ValueError("stream id too long")
    ms, _, seq = text.partition("-")
    if not (ms.isascii() and ms.isdigit()) or (seq and not (seq.isascii() and seq.isdigit())):
        raise ValueError(f"not a stream id: {text[:40]!r}")
    parsed = int(ms), int(seq or 0)
    if parsed[0] > MAX_ID_MS or parsed[1] > MAX_ID_SEQ:
        raise ValueError("stream id out of range")
    return parsed


def format_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


# The string quoting of `json.dumps(..., ensure_ascii=False)` (its C function):
# the two frames sent for every message are written with it directly, the
# same text as `frame()` would give at a quarter of the cost (no dict, no
# encoder made per call).
_quote = json.encoder.encode_basestring
_EDITED = ',"edited":true'


def chat_frame(msg_id: str, room: str, user: str, text: str, edited: bool = False) -> str:
    """The JSON `chat` frame; `ts` is the stream id's milliseconds as seconds;
    `edited: true` when the text is not the first one."""
    ts = int(msg_id.partition("-")[0]) / 1000
    return (f'{{"type":"chat","id":{_quote(msg_id)},"room":{_quote(room)},'
            f'"user":{_quote(user)},"text":{_quote(text)},"ts":{ts!r}'
            f'{_EDITED if edited else ""}}}')


def ack_frame(cid: str, msg_id: str) -> str:
    """The JSON `ack` frame of a stored message: `frame("ack", cid=cid, id=msg_id)`."""
    return f'{{"type":"ack","cid":{_quote(cid)},"id":{_quote(msg_id)}}}'


def frame(kind: str, **fields: Any) -> str:
    """Any other server frame, e.g. `frame("error", code=..., reason=...)`."""
    return json.dumps({"type": kind, **fields}, ensure_ascii=False, separators=(",", ":"))


def unpack(data: bytes) -> dict[str, Any]:
    """Decode a payload published by a script (`cmsgpack`) or by `pack`."""
    decoded = msgpack.unpackb(data, raw=False)
    if not isinstance(decoded, dict):
        raise ValueError("payload is not a map")
    return decoded


def pack(payload: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(payload, use_bin_type=True)
    return packed


def as_str(value: Any) -> str:
    """Redis replies come as bytes; frames want text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
