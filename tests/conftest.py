"""Real parts for every test: a redis-server, and the whole stack from the project's configs.

Both start once per test session on free ports and are stopped (by pid) at
the end. Tests keep out of each other's way with unique user and room names.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis

from chatclient import HttpSession
from rigs.certs import TestPki
from rigs.ports import free_port, settings_on_free_ports
from stack.run import Stack
from tests.secrets_seen import SecretsSeen

START_TIMEOUT = 30.0


def wait_for_port(port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} never answered")


def unique(prefix: str) -> str:
    """A fresh user or room name (fits the 32-character name rule)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server of our own, for the store and bus tests."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (make test installs it)"
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running_stack(var: Path, auth: str = "open", env: dict[str, str] | None = None,
                  keep_logs_as: str = "", tls_cert: Path | None = None) -> Iterator[Stack]:
    """A whole stack of 2 instances in `var`, ready; stopped (by pid) on exit.
    With CHAT_KEEP_LOGS set, its logs are kept in test-artifacts/`keep_logs_as`.
    With `tls_cert`, HAProxy serves HTTPS too (`Stack.https_url`)."""
    running = Stack(settings_on_free_ports(2, var, auth=auth, tls_cert=tls_cert), env=env)
    running.start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()
        if keep_logs_as and os.environ.get("CHAT_KEEP_LOGS"):
            shutil.copytree(var / "log", Path("test-artifacts") / keep_logs_as,
                            dirs_exist_ok=True)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole stack: supervisord running Redis, 2 chat instances and HAProxy."""
    with running_stack(tmp_path_factory.mktemp("stack"), keep_logs_as="stack-log") as running:
        yield running


@pytest.fixture(scope="session")
def accounts_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second whole stack, in accounts mode (the product's default): a name
    needs its password. Tests that fail logins on it connect from a loopback
    address of their own (`own_address`), so the throttle's per-address count
    of one test never refuses another's. It logs in JSON (CHAT_LOG_FORMAT=json),
    the `stack` in text, so tests/test_zz_logs.py reads a session of each."""
    with running_stack(tmp_path_factory.mktemp("accounts-stack"), auth="accounts",
                       env={"CHAT_LOG_FORMAT": "json"},
                       keep_logs_as="accounts-stack-log") as running:
        yield running


@pytest.fixture(scope="session")
def https_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A throwaway root and intermediate CA (openssl, in the run's temporary folder)."""
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def https_stack(tmp_path_factory: pytest.TempPathFactory, https_pki: TestPki) -> Iterator[Stack]:
    """A whole stack in accounts mode whose HAProxy also serves HTTPS, with a leaf of
    `https_pki` as its certificate (its file: `settings.tls.cert`; a test may renew it)."""
    cert = https_pki.issue("front")
    with running_stack(tmp_path_factory.mktemp("https-stack"), auth="accounts",
                       keep_logs_as="https-stack-log", tls_cert=cert) as running:
        yield running


@pytest.fixture(scope="session", autouse=True)
def secrets_used() -> Iterator[SecretsSeen]:
    """Every password and session id the session's HTTP clients used (tests/secrets_seen.py)."""
    seen = SecretsSeen()
    with seen.watching():
        yield seen


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the test session's own redis-server."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


_addresses = iter(range(2, 250))


def own_address() -> str:
    """A loopback address (127.0.0.x) no other test of this session connects from."""
    return f"127.0.0.{next(_addresses)}"


@pytest.fixture
def instance_urls(stack: Stack) -> list[str]:
    return [f"http://127.0.0.1:{p}" for p in stack.settings.instance_ports()]


@pytest.fixture
async def front(stack: Stack) -> AsyncIterator[HttpSession]:
    """A fresh browser talking to HAProxy."""
    session = HttpSession(stack.url)
    yield session
    session.close()


@pytest.fixture
async def direct(instance_urls: list[str]) -> AsyncIterator[HttpSession]:
    """A fresh browser talking to instance 1 directly."""
    session = HttpSession(instance_urls[0])
    yield session
    session.close()


@contextmanager
def lone_instance(stack: Stack, *flags: str) -> Iterator[str]:
    """One more chat process with its own flags, on the stack's Redis and cookie
    secret, outside HAProxy; its URL. Stopped (by pid) on exit. Open mode, as the
    stack's, unless the flags say `--auth=accounts`."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "chat_server.py", f"--port={port}",
         f"--redis-url={stack.settings.effective_redis_url}",
         f"--cookie-secret-file={stack.settings.var / 'cookie_secret'}", "--auth=open",
         *flags],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
