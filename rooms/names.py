"""Names: the user and room names people type (docs/protocol.md), and the
server-chosen names of direct-message rooms."""

from __future__ import annotations

import re

# 1-32 of letters, digits, '.', '_', '-': safe in a Redis key, a hash tag,
# a URL and an HTML attribute alike.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,32}")

NAME_RULE = "1 to 32 letters, digits, '.', '_' or '-'"


def is_valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None

# A direct-message room: "@" and the two users' names, sorted without regard to
# case, joined by "+". Neither character is allowed in a typed room name, so a
# DM's name can never be taken by a room someone creates.
_DM = re.compile(r"@([A-Za-z0-9._-]{1,32})\+([A-Za-z0-9._-]{1,32})")


def dm_room(one: str, other: str) -> str:
    """The DM room of two users: the same whoever asks."""
    first, second = sorted((one, other), key=lambda name: (name.lower(), name))
    return f"@{first}+{second}"


def dm_users(room: str) -> tuple[str, str] | None:
    found = _DM.fullmatch(room)
    return (found.group(1), found.group(2)) if found else None


def is_room_name(room: str) -> bool:
    """A name a frame may carry: a typed room name or a DM's."""
    return is_valid_name(room) or dm_users(room) is not None
