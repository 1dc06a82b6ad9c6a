"""Every password and session id the test session's HTTP clients used, for
tests/test_zz_logs.py to look for in the logs afterwards (never to be found).

Recorded by wrapping `HttpSession.request` for the whole session (conftest):
the `password`, `old` and `new` form fields sent, and each `jsessionid` cookie
received, as its session id and its signature (a logged raw cookie shows either).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from chatclient import HttpSession

PASSWORD_FIELDS = ("password", "old", "new")
# Passwords shorter than this are left out: tests also send "a" or "password" to
# check refusals, and those are words of ordinary log lines ("POST /password").
# The tests' real passwords are "pw-" and 32 hex digits.
DISTINCT_PASSWORD_CHARS = 12
SESSION_COOKIE = "jsessionid"
# What a secret is made of when it is one "word" of a log line: a session id
# (URL-safe base64), a cookie's hex signature, the tests' passwords.
WORD = re.compile(r"[A-Za-z0-9_\-]+")


def session_id_of(cookie: str) -> str | None:
    """The session id inside Tornado's signed value
    "2|1:0|<len>:<time>|<len>:<name>|<len>:<base64 id>|<signature>"."""
    parts = cookie.split("|")
    if len(parts) != 6:
        return None
    try:
        return base64.b64decode(parts[4].split(":", 1)[1]).decode()
    except (IndexError, ValueError, binascii.Error):
        return None


@dataclass
class SecretsSeen:
    passwords: set[str] = field(default_factory=set)
    session_ids: set[str] = field(default_factory=set)
    signatures: set[str] = field(default_factory=set)

    def note_cookie(self, cookie: str) -> None:
        session_id = session_id_of(cookie)
        if session_id:
            self.session_ids.add(session_id)
            self.signatures.add(cookie.rsplit("|", 1)[1])

    def found_in(self, text: str) -> set[str]:
        """Every recorded secret in `text`: each word-shaped one as a whole word of
        it (one set lookup each, so thousands of ids cost nothing), any other
        password as a substring."""
        words = set(WORD.findall(text))
        secrets = self.passwords | self.session_ids | self.signatures
        found = {s for s in secrets if WORD.fullmatch(s) and s in words}
        found |= {s for s in self.passwords if not WORD.fullmatch(s) and s in text}
        return found

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Record what every HttpSession sends and receives until the block ends."""
        original = HttpSession.request
        seen = self

        async def request(session: HttpSession, method: str, path: str,
                          form: dict[str, str] | None = None, *args: Any,
                          **kwargs: Any) -> Any:
            for name in PASSWORD_FIELDS:
                if form and len(form.get(name, "")) >= DISTINCT_PASSWORD_CHARS:
                    seen.passwords.add(form[name])
            response = await original(session, method, path, form, *args, **kwargs)
            if SESSION_COOKIE in session.cookies:
                seen.note_cookie(session.cookies[SESSION_COOKIE])
            return response

        HttpSession.request = request  # type: ignore[method-assign]
        try:
            yield
        finally:
            HttpSession.request = original  # type: ignore[method-assign]
