"""More HAProxy processes on a chatfleet stack's front port, when one cannot hold the sockets.

A proxied WebSocket takes two descriptors in HAProxy, and a process can hold
no more descriptors than its hard RLIMIT_NOFILE, which only root with
CAP_SYS_RESOURCE may raise (stack/limits.py raises the soft limit to it).
Where that limit is below twice the sockets a bench wants through HAProxy,
the bench starts more HAProxy processes, by pid, with the stack's own
haproxy.cfg (rendered by stack/render.py) on the same address: HAProxy binds
with SO_REUSEPORT, so the kernel spreads new connections over all of them.
Each has a stats socket of its own, in its own folder.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from stack.haproxy_stats import stats_command
from stack.limits import front_door_connections
from stack.render import fill_haproxy_template, local_servers
from stack.run import Stack

# Fill each HAProxy to at most this share of its connections: the kernel's
# spread over SO_REUSEPORT listeners is a hash, not a round robin.
FILL_SHARE = 0.9
START_TIMEOUT_SECONDS = 10.0


class Front(NamedTuple):
    """One extra HAProxy: its pid and its stats socket."""

    pid: int
    stats: Path


def haproxies_needed(sockets: int, nofile: int) -> int:
    """How many HAProxy processes hold `sockets`, each filled to FILL_SHARE at most."""
    return max(1, math.ceil(sockets / max(1.0, front_door_connections(nofile) * FILL_SHARE)))


@contextlib.contextmanager
def extra_haproxies(stack: Stack, count: int, folder: Path) -> Iterator[list[Front]]:
    """Start `count` more HAProxy processes beside the stack's; yield them; stop them."""
    binary = shutil.which("haproxy") or "haproxy"
    settings = stack.settings
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(2, count + 2):
            var = folder / f"haproxy-{n}"
            var.mkdir(parents=True, exist_ok=True)
            config = var / "haproxy.cfg"
            config.write_text(fill_haproxy_template(
                f"127.0.0.1:{settings.http_port}", local_servers(settings), var, settings.edge))
            with (var / "haproxy.log").open("ab") as log:
                procs.append(subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        _wait_stats_sockets(folder, procs)
        yield [Front(p.pid, folder / f"haproxy-{n}" / "haproxy.sock")
               for n, p in enumerate(procs, start=2)]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(START_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_stats_sockets(folder: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    """Each extra HAProxy is up once its stats socket exists (it binds the front first)."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    for n, proc in enumerate(procs, start=2):
        while not (folder / f"haproxy-{n}" / "haproxy.sock").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"extra HAProxy {n} did not start; see {folder}/haproxy-{n}")
            time.sleep(0.05)


def haproxy_info(stats_socket: Path) -> dict[str, str]:
    """`show info` over a HAProxy's stats socket: {"Maxconn": "9890", "CurrConns": ...}."""
    lines = stats_command(stats_socket, "show info").splitlines()
    pairs = (line.split(":", 1) for line in lines if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}
