"""A planned stop (SIGTERM, what supervisorctl sends) under load: every socket
gets 1012 and the process ends by itself, within its drain budget, even when
Redis is gone (runtime/process.py)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatclient import ChatSocket, HttpSession
from stack.run import Stack
from tests.conftest import free_port, unique, wait_for_port

PROJECT = Path(__file__).resolve().parent.parent
# Generous: the process's own budget is 12 s (supervisord kills at 15).
EXIT_PATIENCE_SECONDS = 60


@contextmanager
def chat_process(
    redis_url: str, secret_file: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "chat_server.py", f"--port={port}", f"--redis-url={redis_url}",
         f"--cookie-secret-file={secret_file}", "--drain-wait=0.5", "--drain-spread=1",
         "--rate-limit=0", "--auth=open"],  # the load chats faster than a person
        cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def open_sockets(url: str, logins: int, per_login: int) -> tuple[list[HttpSession],
                                                                      list[ChatSocket]]:
    sessions, sockets = [], []
    for _ in range(logins):
        http = HttpSession(url)
        await http.login(unique("drain"))
        sessions.append(http)
        for _ in range(per_login):
            sock = await ChatSocket.connect(http)
            await sock.next_of("presence", room="lobby")
            sockets.append(sock)
    return sessions, sockets


async def chatter(sock: ChatSocket, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        try:
            await sock.send({"type": "chat", "room": "lobby", "text": f"load {n}", "cid": f"l{n}"})
        except Exception:  # noqa: BLE001 - the socket is being closed under us: that is the test
            return
        await asyncio.sleep(0.05)


async def test_sigterm_under_load_closes_every_socket_1012_and_exits(stack: Stack) -> None:
    secret = stack.settings.var / "cookie_secret"
    with chat_process(stack.settings.effective_redis_url, secret) as (url, proc):
        sessions, sockets = await open_sockets(url, logins=3, per_login=10)
        stop = asyncio.Event()
        load = [asyncio.create_task(chatter(s, stop)) for s in sockets[:5]]
        await asyncio.sleep(0)  # the load is running
        proc.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(s.closed(timeout=EXIT_PATIENCE_SECONDS) for s in sockets))
        stop.set()
        await asyncio.gather(*load)
        assert codes == [1012] * len(sockets)
        assert await asyncio.to_thread(proc.wait, EXIT_PATIENCE_SECONDS) == 0
        for http in sessions:
            http.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server this test may kill."""
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port, redis
    finally:
        if redis.poll() is None:
            redis.kill()
            redis.wait()


async def test_sigterm_with_redis_gone_still_ends_in_time(
    stack: Stack, own_redis: tuple[int, subprocess.Popen[bytes]]
) -> None:
    """Redis vanished mid-life: every step that waits on it is bounded by the one
    drain deadline, so the process still closes its sockets and exits itself."""
    port, redis = own_redis
    secret = stack.settings.var / "cookie_secret"
    with chat_process(f"redis://127.0.0.1:{port}/0", secret) as (url, proc):
        sessions, sockets = await open_sockets(url, logins=2, per_login=5)
        redis.kill()
        await asyncio.to_thread(redis.wait)
        proc.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(
            *(s.closed(timeout=EXIT_PATIENCE_SECONDS) for s in sockets))
        assert codes == [1012] * len(sockets)
        assert await asyncio.to_thread(proc.wait, EXIT_PATIENCE_SECONDS) == 0
        for http in sessions:
            http.close()
