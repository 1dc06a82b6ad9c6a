"""Rules for the names people type: user names and room names (docs/protocol.md)."""

from __future__ import annotations

import re

# 1-32 of letters, digits, '.', '_', '-': safe in a Redis key, a hash tag,
# a URL and an HTML attribute alike.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,32}")

NAME_RULE = "1 to 32 letters, digits, '.', '_' or '-'"


def is_valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None
