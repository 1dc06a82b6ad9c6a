"""HAProxy's view of its chat servers, read over its stats socket (`show stat`)."""

from __future__ import annotations

import csv
import socket
import time
from pathlib import Path

BACKEND = "chat_instances"  # haproxy.cfg's backend
STATS_TIMEOUT_SECONDS = 5.0
POLL_SECONDS = 0.1


def server_states(stats_socket: Path) -> dict[str, str]:
    """{"chat1": "UP", "chat2": "DOWN", ...} as HAProxy sees its chat servers now."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(STATS_TIMEOUT_SECONDS)
        conn.connect(str(stats_socket))
        conn.sendall(b"show stat\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    states = {}
    for row in csv.reader(data.decode().lstrip("# ").splitlines()):
        if len(row) > 17 and row[0] == BACKEND and row[1].startswith("chat"):
            states[row[1]] = row[17].split(" ")[0]
    return states


def wait_server_states(stats_socket: Path, want: str, names: list[str], timeout: float) -> None:
    """Wait until HAProxy reports each of `names` in state `want` (UP, DOWN, ...)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            states = server_states(stats_socket)
        except OSError:
            states = {}
        if all(states.get(name) == want for name in names):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"HAProxy servers {states}, wanted {names} {want}")
        time.sleep(POLL_SECONDS)
