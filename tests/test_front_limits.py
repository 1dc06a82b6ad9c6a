"""Per-address limits at the front door: concurrent connections, new connections per
10 s, login/signup POSTs per minute.

The session's stack runs with these limits off (every test connects from
127.0.0.1), so this module starts a second HAProxy of its own, by pid, rendered
from the project's haproxy.cfg with small limits, in front of the same
instances' TCP ports. Each test speaks from its own loopback address
(127.0.0.21, .22, ...; all of 127/8 is this host), and 127.0.0.23 shows that
one address's flood leaves another alone.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from rigs.ports import free_port, settings_on_free_ports
from stack.front import FrontDoor
from stack.haproxy_stats import server_states
from stack.hosts import main as hosts_main
from stack.render import Server, haproxy_config
from stack.run import Stack
from stack.settings import EdgeLimits, StackSettings
from tests.conftest import unique
from tests.test_http_edge import Answer, exchange, new_cookies, read_answer, request_head

CONCURRENT = 5
NEW_PER_10S = 10
LOGINS_PER_MINUTE = 3
SMALL = EdgeLimits(max_conns_per_address=CONCURRENT, max_new_conns_per_address=NEW_PER_10S,
                   max_logins_per_address=LOGINS_PER_MINUTE)

HOLDER = "127.0.0.21"      # holds connections open
CHURNER = "127.0.0.22"     # opens many, one after another
BYSTANDER = "127.0.0.23"   # never over any limit
LOGGER_IN = "127.0.0.24"   # logs in too often
WAIT_SECONDS = 20.0


@pytest.fixture(scope="module")
def limited(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoor]:
    """A second front door, small limits, over the session stack's instances (TCP)."""
    servers = [Server(f"chat{n}", "127.0.0.1", port)
               for n, port in enumerate(stack.settings.instance_ports(), start=1)]
    door = FrontDoor(f"127.0.0.1:{free_port()}", servers, tmp_path_factory.mktemp("limited"),
                     limits=SMALL)
    door.start()
    try:
        # Readiness from the stats socket only: polling the front from 127.0.0.1
        # would spend that address's connections.
        door.wait_listening()
        door.wait_servers("UP", [s.name for s in servers])
        yield door
    finally:
        door.stop()


def port(door: FrontDoor) -> int:
    return int(door.url.rsplit(":", 1)[1])


def connect_from(source: str, door: FrontDoor) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port(door)), timeout=WAIT_SECONDS,
                                    source_address=(source, 0))


def healthz_on(sock: socket.socket) -> Answer | None:
    """GET /healthz on an open (kept-alive) connection."""
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        return None
    return read_answer(sock)


def answered(source: str, door: FrontDoor) -> Answer | None:
    return exchange(port(door), request_head("GET", "/healthz"), source=source)


def table_entry(door: FrontDoor, source: str) -> str:
    """HAProxy's stick-table line for `source` (empty if none)."""
    with socket.socket(socket.AF_UNIX) as admin:
        admin.settimeout(5)
        admin.connect(str(door.stats_socket))
        admin.sendall(f"show table chat_front key ::ffff:{source}\n".encode())
        data = b""
        while chunk := admin.recv(65536):
            data += chunk
    return next((line for line in data.decode().splitlines() if "key=" in line), "")


def test_one_address_holds_at_most_n_connections(limited: FrontDoor) -> None:
    held = [connect_from(HOLDER, limited) for _ in range(CONCURRENT)]
    try:
        for sock in held:  # each is accepted and served, and stays open
            answer = healthz_on(sock)
            assert answer is not None and answer.status == 200
        # One more is closed at once, unanswered (perhaps before connect() returns).
        assert answered(HOLDER, limited) is None
        other = answered(BYSTANDER, limited)
        assert other is not None and other.status == 200
        # One closed frees its place: wait (on HAProxy's own count) and use it.
        held.pop().close()
        deadline = time.monotonic() + WAIT_SECONDS
        while f"conn_cur={CONCURRENT - 1}" not in table_entry(limited, HOLDER):
            assert time.monotonic() < deadline, table_entry(limited, HOLDER)
            time.sleep(0.05)
        again = connect_from(HOLDER, limited)
        held.append(again)
        answer = healthz_on(again)
        assert answer is not None and answer.status == 200
    finally:
        for sock in held:
            sock.close()


def test_one_address_opens_at_most_n_connections_per_10_seconds(limited: FrontDoor) -> None:
    for n in range(NEW_PER_10S):
        answer = answered(CHURNER, limited)
        assert answer is not None and answer.status == 200, n
    assert answered(CHURNER, limited) is None
    other = answered(BYSTANDER, limited)
    assert other is not None and other.status == 200


def login_from(source: str, door: FrontDoor, xsrf: str) -> Answer | None:
    body = urllib.parse.urlencode(
        {"user": unique("flood"), "password": "not-the-password", "_xsrf": xsrf}).encode()
    head = request_head("POST", "/login", {
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(len(body)), "Cookie": f"_xsrf={xsrf}"})
    return exchange(port(door), head, body, source=source)


def xsrf_from(source: str, door: FrontDoor) -> str:
    page = exchange(port(door), request_head("GET", "/"), source=source)
    assert page is not None and page.status == 200
    return new_cookies(page)["_xsrf"]


def test_one_address_posts_at_most_n_logins_per_minute(limited: FrontDoor) -> None:
    xsrf = xsrf_from(LOGGER_IN, limited)
    for n in range(LOGINS_PER_MINUTE):
        answer = login_from(LOGGER_IN, limited, xsrf)
        # The instance answered (a wrong password, or a name-only login in open mode).
        assert answer is not None and answer.status in (302, 400, 401), (n, answer)
    refused = login_from(LOGGER_IN, limited, xsrf)
    assert refused is not None and refused.status == 429
    assert refused.header("retry-after") == "60"
    assert len(refused.body) < 200 and b"Traceback" not in refused.body
    for name in ("content-security-policy", "x-content-type-options", "referrer-policy",
                 "x-frame-options"):
        assert refused.header(name), name
    # Other requests from that address still pass; so do another address's logins.
    page = exchange(port(limited), request_head("GET", "/"), source=LOGGER_IN)
    assert page is not None and page.status == 200
    other = login_from(BYSTANDER, limited, xsrf_from(BYSTANDER, limited))
    assert other is not None and other.status in (302, 400, 401)


# -- rendering ------------------------------------------------------------------------


def test_stack_defaults_render_limits_a_nat_office_does_not_meet(tmp_path: Path) -> None:
    config = haproxy_config(StackSettings(var=tmp_path))
    assert "reject if { sc0_conn_cur gt 1000 }" in config
    assert "reject if { sc0_conn_rate gt 500 }" in config
    assert "{ sc1_http_req_rate gt 60 }" in config
    assert "{{" not in config


def test_test_and_bench_stacks_have_the_per_address_limits_off(tmp_path: Path) -> None:
    settings = settings_on_free_ports(2, tmp_path)
    config = haproxy_config(settings)
    for gone in ("sc0_conn_cur gt", "sc0_conn_rate gt", "sc1_http_req_rate gt"):
        assert gone not in config
    # Body limits and the rest of the front door stay.
    assert "deny_status 413" in config and "del-header X-Forwarded-For" in config
    # What the bench tools do with a stack of their own (bench/targets.py).
    kept = replace(settings, redis_url="redis://127.0.0.1:1/0")
    assert kept.edge == settings.edge


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CHAT_MAX_CONNS_PER_ADDRESS", "70")
    monkeypatch.setenv("CHAT_MAX_NEW_CONNS_PER_ADDRESS", "0")
    monkeypatch.setenv("CHAT_MAX_LOGINS_PER_ADDRESS", "9")
    config = haproxy_config(StackSettings.from_env())
    assert "sc0_conn_cur gt 70 }" in config
    assert "sc0_conn_rate gt" not in config
    assert "sc1_http_req_rate gt 9 }" in config
    # The many-hosts front door reads the same variables.
    hosts_main(["render-front", "--hosts", "10.0.0.2:8001", "--var", str(tmp_path)])
    front = capsys.readouterr().out
    assert "sc0_conn_cur gt 70 }" in front and "sc1_http_req_rate gt 9 }" in front
    assert "sc0_conn_rate gt" not in front


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize("limits", [EdgeLimits(), SMALL, EdgeLimits.per_address_off()])
def test_haproxy_accepts_every_rendering(tmp_path: Path, limits: EdgeLimits) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(StackSettings(var=tmp_path, edge=limits)))
    done = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_limited_front_door_serves_the_stack(limited: FrontDoor) -> None:
    assert set(server_states(limited.stats_socket).values()) == {"UP"}
