"""Password work off the event loop: Argon2id (argon2-cffi) and the strength
check (zxcvbn), in one thread pool of bounded size with a bounded queue.

Argon2 releases the GIL while it hashes; zxcvbn is pure Python, and in a
thread it gives the loop a turn every switch interval (5 ms). So a burst of
logins slows the sockets of the same process by at most the pool's share of
the CPU, and past `max_waiting` queued jobs a login is refused (`Busy`, 503)
instead of waiting without end.
"""

from __future__ import annotations

import asyncio
import os
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

import metrics

KDF_RUNS = metrics.counter(
    "chat_password_kdf_total", "Argon2id runs (hashes and verifications, dummy ones included)"
)

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 128

# zxcvbn judges the first this many characters: the longest entry of its
# password lists has 20, so every well-known password is judged whole, and its
# cost grows steeply with length (a crafted 128-character input took seconds).
JUDGED_CHARS = 20
# zxcvbn's score 0-4; 0 and 1 are "too guessable" (under 10^6 guesses).
MIN_SCORE = 2

# Jobs queued or running per process before a login is answered 503.
MAX_WAITING = 32

# The pool's threads run at this nice value (Linux: per thread), so when the
# cores are busy the kernel gives the event loop the CPU before a password.
PASSWORD_THREAD_NICE = 10


def _lower_priority() -> None:
    """Pool thread initializer: nice this thread only (its own Linux task id)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PASSWORD_THREAD_NICE)
    except OSError:
        pass  # not permitted here: run at the process's priority

T = TypeVar("T")


class Busy(Exception):
    """The password pool is full: answer 503 and let the client retry."""


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost (README: Security). OWASP's first configuration: 19 MiB,
    2 passes, 1 lane; RFC 9106's 64 MiB/3 passes/4 lanes costs 190 ms of CPU per
    login, too much for a 2-core box that also serves the chat."""

    time_cost: int = 2
    memory_kib: int = 19 * 1024
    parallelism: int = 1


def normalized(password: str) -> str:
    """NFKC, so the same password typed on two keyboards is the same password."""
    return unicodedata.normalize("NFKC", password)


def password_problem(password: str, user: str) -> str | None:
    """Why `password` may not be chosen by `user`, or None. Never quotes it."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"A password needs at least {MIN_PASSWORD_CHARS} characters."
    if len(password) > MAX_PASSWORD_CHARS:
        return f"A password may have at most {MAX_PASSWORD_CHARS} characters."
    verdict = zxcvbn(password[:JUDGED_CHARS], user_inputs=[user, "chatfleet"])
    if verdict["score"] < MIN_SCORE:
        hint = verdict["feedback"].get("warning") or ""
        return ("That password is too easy to guess: it is a well-known password or close "
                "to one." + (f" {hint}" if hint else "") + " Try a few uncommon words.")
    return None


class Passwords:
    """Hash, verify and judge passwords in a pool of `threads` threads."""

    def __init__(self, params: KdfParams = KdfParams(), threads: int = 1,
                 max_waiting: int = MAX_WAITING) -> None:
        self.hasher = PasswordHasher(time_cost=params.time_cost, memory_cost=params.memory_kib,
                                     parallelism=params.parallelism, type=Type.ID)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="passwords",
                                       initializer=_lower_priority)
        self.max_waiting = max_waiting
        self.waiting = 0
        self._dummy = ""

    async def start(self) -> None:
        """Make the dummy hash an unknown account is verified against: same
        parameters as a real one, so both cost one Argon2id run alike."""
        self._dummy = await self._run(self.hasher.hash, "no account has this password")

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        if self.waiting >= self.max_waiting:
            raise Busy()
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, work, *args)
        finally:
            self.waiting -= 1

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    async def hash(self, password: str) -> str:
        hashed = await self._run(self.hasher.hash, normalized(password))
        KDF_RUNS.inc()  # counted on the loop's thread, as every counter is (metrics)
        return hashed

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether `password` matches `stored`; with no account (`stored` None)
        the dummy hash is verified all the same, and the answer is False."""
        if not self._dummy:
            await self.start()
        matched = await self._run(self._verify, stored or self._dummy, normalized(password))
        KDF_RUNS.inc()
        return matched and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        """Made with other parameters than today's: hash again at this login."""
        try:
            return self.hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    async def problem(self, password: str, user: str) -> str | None:
        """`password_problem`, off the loop (zxcvbn costs up to ~0.1 s)."""
        return await self._run(password_problem, normalized(password), user)
