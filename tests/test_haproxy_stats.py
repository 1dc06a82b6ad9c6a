"""HAProxy's `show stat` read by column name: a real HAProxy's servers, and columns in any order."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rigs.ports import free_port
from stack.haproxy_stats import BACKEND, parse_server_states, server_states, wait_server_states

WAIT = 20.0


def test_columns_are_found_by_name_in_any_order() -> None:
    text = (
        "# status,svname,qcur,pxname\n"
        f"UP,chat1,0,{BACKEND}\n"
        f"DOWN 1/2,chat2,0,{BACKEND}\n"
        f"UP,FRONTEND,,{BACKEND}\n"
        "UP,chat3,0,another_backend\n"
        "\n"
    )
    assert parse_server_states(text) == {"chat1": "UP", "chat2": "DOWN"}


def test_no_output_is_no_servers_and_other_output_is_refused() -> None:
    assert parse_server_states("") == {}
    with pytest.raises(ValueError, match="show stat"):
        parse_server_states("Unknown command. Please enter one of the following commands only:\n")


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Path]:
    """A real HAProxy whose backend has chat1 (a listening port) and chat2 (nothing there)."""
    binary = shutil.which("haproxy")
    assert binary, "haproxy is not installed (make test installs it)"
    listening = socket.create_server(("127.0.0.1", 0))
    taken = {listening.getsockname()[1]}
    stats = tmp_path / "haproxy.sock"
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""\
global
    stats socket {stats} mode 600 level admin
defaults
    mode tcp
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend front
    bind 127.0.0.1:{free_port(taken)}
    default_backend {BACKEND}
backend {BACKEND}
    server chat1 127.0.0.1:{listening.getsockname()[1]} check inter 100ms rise 1 fall 1
    server chat2 127.0.0.1:{free_port(taken)} check inter 100ms rise 1 fall 1
""")
    proc = subprocess.Popen([binary, "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield stats
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=WAIT)
        listening.close()


def test_a_real_haproxy_reports_its_chat_servers(haproxy: Path) -> None:
    wait_server_states(haproxy, "UP", ["chat1"], WAIT)
    wait_server_states(haproxy, "DOWN", ["chat2"], WAIT)
    assert server_states(haproxy) == {"chat1": "UP", "chat2": "DOWN"}
