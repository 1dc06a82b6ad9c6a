"""HAProxy's view of its chat servers, read over its stats socket (`show stat`)."""

from __future__ import annotations

import csv
import socket
import time
from pathlib import Path

BACKEND = "chat_instances"  # haproxy.cfg's backend
STATS_TIMEOUT_SECONDS = 5.0
POLL_SECONDS = 0.1
# `show stat` names its columns on its first line, "# pxname,svname,...,status,...".
STAT_HEADER_PREFIX = "# "
COLUMNS = ("pxname", "svname", "status")  # the ones read here


def stats_command(stats_socket: Path, command: str) -> str:
    """HAProxy's answer to one stats-socket `command` ("show stat", "show info")."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(STATS_TIMEOUT_SECONDS)
        conn.connect(str(stats_socket))
        conn.sendall(command.encode() + b"\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data.decode()


def read_show_stat(stats_socket: Path) -> str:
    """HAProxy's `show stat` CSV, read over its stats socket."""
    return stats_command(stats_socket, "show stat")


def server_states(stats_socket: Path) -> dict[str, str]:
    """{"chat1": "UP", "chat2": "DOWN", ...} as HAProxy sees its chat servers now."""
    return parse_server_states(read_show_stat(stats_socket))


def parse_server_states(show_stat: str) -> dict[str, str]:
    """The chat servers' states in `show stat` output, columns read by the names of its header.

    The header is the first line, `# pxname,svname,...`; it must name the
    columns read here (COLUMNS), wherever they stand. A transitional status
    ("UP 1/3", "DOWN 1/2") counts as its first word. No output at all (HAProxy
    closed the socket first) is no servers; output without that header raises
    ValueError.
    """
    return {name: row["status"].split(" ")[0]
            for name, row in parse_server_rows(show_stat).items()}


def parse_server_rows(show_stat: str) -> dict[str, dict[str, str]]:
    """Every column of each chat server's row in `show stat` output, by the header's
    names ({"chat1": {"status": "UP", "scur": "3", ...}}); see parse_server_states."""
    lines = show_stat.splitlines()
    if not lines:
        return {}
    header = next(csv.reader([lines[0].removeprefix(STAT_HEADER_PREFIX)]))
    if not lines[0].startswith(STAT_HEADER_PREFIX) or not set(COLUMNS) <= set(header):
        raise ValueError(f"not HAProxy `show stat` output: {lines[0][:80]!r}")
    rows = {}
    for row in csv.DictReader(lines[1:], fieldnames=header):
        name = row["svname"]
        if row["pxname"] == BACKEND and name.startswith("chat"):
            rows[name] = row
    return rows


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
