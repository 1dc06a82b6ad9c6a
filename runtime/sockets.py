"""The open chat sockets of one process: who is here, by login, and their ends.

One registry, owned by the process (runtime/process.py): the WebSocket
handler registers a socket when it opens and removes it when it closes, the
bus asks it to end a login's sockets, the session watcher and the drain walk
it. Nothing else keeps a list of sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from redis.exceptions import RedisError

from sessions import SessionStore

log = logging.getLogger(__name__)

# Logins asked about per pipelined batch in the periodic session check.
SESSION_CHECK_BATCH = 500


class Socket(Protocol):
    """What the registry needs of a chat socket."""

    login_id: str
    user: str
    # Whether the user sent anything since the last session check.
    active: bool

    def send_frame(self, text: str) -> None:
        """Queue a frame (a kick or an invitation)."""

    def end_session(self) -> None:
        """Close because the session ended (4401)."""

    def close_draining(self) -> None:
        """Close because this process is stopping (1012)."""


class SocketRegistry:
    """Every open socket of the process; what `admit` registers, `remove` unregisters."""

    def __init__(self, max_per_login: int) -> None:
        self.max_per_login = max_per_login
        self.open: set[Socket] = set()
        # Counted per login, not per user: whoever holds one login (a stolen
        # cookie, a script) can fill only that login's sockets, never lock the
        # user's other devices out.
        self._by_login: Counter[str] = Counter()
        # Every socket of a user here: kicks and invitations address a user.
        self._by_user: dict[str, set[Socket]] = {}
        # Room leaves of closed sockets, kept referenced until done.
        self._leaving: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.open)

    def admit(self, socket: Socket) -> bool:
        """Register `socket`; False (nothing registered) past its login's cap."""
        if self._by_login[socket.login_id] >= self.max_per_login:
            return False
        self._by_login[socket.login_id] += 1
        self.open.add(socket)
        self._by_user.setdefault(socket.user, set()).add(socket)
        return True

    def of_user(self, user: str) -> list[Socket]:
        """The user's open sockets on this process."""
        return list(self._by_user.get(user, ()))

    def remove(self, socket: Socket, leave_rooms: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Unregister a closed socket; its rooms are left in the background."""
        if socket not in self.open:
            return
        self.open.discard(socket)
        mine = self._by_user.get(socket.user)
        if mine is not None:
            mine.discard(socket)
            if not mine:
                del self._by_user[socket.user]
        self._by_login[socket.login_id] -= 1
        if self._by_login[socket.login_id] <= 0:
            del self._by_login[socket.login_id]
        task = asyncio.get_running_loop().create_task(leave_rooms())
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    def end_login(self, login_id: str) -> None:
        """Close every socket of this login here (4401): it logged out or was pushed out."""
        for socket in [s for s in self.open if s.login_id == login_id]:
            socket.end_session()

    async def close_all(self, spread_until: float) -> None:
        """Close every socket with 1012, spread evenly until `spread_until` (loop
        time), so clients do not all come back elsewhere in the same instant."""
        sockets = list(self.open)
        loop = asyncio.get_running_loop()
        for n, socket in enumerate(sockets):
            socket.close_draining()
            pause = (spread_until - loop.time()) / max(1, len(sockets) - n - 1)
            if pause > 0 and n < len(sockets) - 1:
                await asyncio.sleep(pause)

    async def wait_left(self, deadline: float) -> None:
        """Let closed sockets finish leaving their rooms, until `deadline` (loop time)."""
        remaining = deadline - asyncio.get_running_loop().time()
        if self._leaving and remaining > 0:
            await asyncio.wait(set(self._leaving), timeout=remaining)

    async def watch_sessions(self, store: SessionStore, interval: float) -> None:
        """Every `interval`, close the sockets whose login's session has ended (idle expiry)."""
        while True:
            await asyncio.sleep(interval)
            by_login: dict[str, list[Socket]] = {}
            for socket in self.open:
                if socket.login_id:
                    by_login.setdefault(socket.login_id, []).append(socket)
            logins = list(by_login)
            try:
                for start in range(0, len(logins), SESSION_CHECK_BATCH):
                    batch = logins[start:start + SESSION_CHECK_BATCH]
                    alive = await store.logins_alive(
                        {login: any(s.active for s in by_login[login]) for login in batch})
                    for login in batch:
                        for socket in by_login[login]:
                            socket.active = False
                            if not alive[login]:
                                socket.end_session()
            except (RedisError, OSError):
                log.warning("session check skipped: Redis unavailable")
