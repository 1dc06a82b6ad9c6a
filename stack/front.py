"""The front door over several hosts: one HAProxy, rendered from haproxy.cfg, run by pid.

On one box supervisord runs HAProxy beside the instances (stack.run). With
several hosts each host's supervisord runs only chat processes, and this runs
the one HAProxy in front of them all (`python -m stack.hosts front`, tests).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from stack.haproxy_stats import server_states, wait_server_states
from stack.limits import raise_nofile
from stack.render import Server, fill_haproxy_template
from stack.run import answers_ok
from stack.settings import HAPROXY_METRICS_PORT, EdgeLimits
from stack.tls import FrontTls

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


def parse_hosts(spec: str) -> list[Server]:
    """"10.0.0.2:8001,10.0.0.2:8002,10.0.0.3:8001" -> chat1, chat2, chat3 in that order.

    The names are the stickiness cookie's values, so keep the order when the
    list grows (append new hosts at the end) and pinned users stay pinned.
    """
    servers = []
    for n, item in enumerate((i.strip() for i in spec.split(",") if i.strip()), start=1):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"not host:port: {item!r}")
        servers.append(Server(f"chat{n}", host.strip("[]"), int(port)))
    if not servers:
        raise ValueError("no host:port given")
    return servers


# Where the front door serves HAProxy's own /metrics unless told otherwise.
DEFAULT_METRICS_BIND = f"127.0.0.1:{HAPROXY_METRICS_PORT}"


def front_door_config(bind: str, servers: Sequence[Server], var: Path,
                      limits: EdgeLimits | None = None, tls: FrontTls | None = None,
                      metrics_bind: str = DEFAULT_METRICS_BIND) -> str:
    """haproxy.cfg for a front door: the one-box template, a server line per host:port
    (with `tls`, HTTPS on the same host as `bind`), HAProxy's exporter on
    `metrics_bind` ("": none)."""
    return fill_haproxy_template(bind, servers, var, limits, tls, metrics_bind)


class FrontDoor:
    """One HAProxy process in front of chat processes on several hosts."""

    def __init__(self, bind: str, servers: Sequence[Server], var: Path,
                 limits: EdgeLimits | None = None, tls: FrontTls | None = None,
                 metrics_bind: str = "") -> None:
        """`limits`: per-address and body limits (default: EdgeLimits(), the production ones).
        `tls`: also serve HTTPS (plain HTTP then redirects there).
        `metrics_bind`: where HAProxy serves its own /metrics (default: nowhere)."""
        self.bind = bind
        self.servers = list(servers)
        self.var = var
        self.limits = limits
        self.tls = tls
        self.metrics_bind = metrics_bind
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        host, _, port = self.bind.rpartition(":")
        return f"http://{'127.0.0.1' if host in ('', '0.0.0.0', '*') else host}:{port}"

    @property
    def stats_socket(self) -> Path:
        return self.var / "haproxy.sock"

    def start(self) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            raise RuntimeError("haproxy is not installed (make run installs it)")
        (self.var / "log").mkdir(parents=True, exist_ok=True)
        config = self.var / "haproxy.cfg"
        if self.tls is not None:
            self.tls.check()
        config.write_text(front_door_config(self.bind, self.servers, self.var, self.limits,
                                            self.tls, self.metrics_bind))
        raise_nofile()  # HAProxy sizes its maxconn from the limit it inherits
        with open(self.var / "log" / "haproxy.log", "ab") as log:
            self.process = subprocess.Popen(
                [binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def server_states(self) -> dict[str, str]:
        return server_states(self.stats_socket)

    def wait_servers(self, want: str, names: list[str], timeout: float = 30.0) -> None:
        wait_server_states(self.stats_socket, want, names, timeout)

    def wait_listening(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Return once HAProxy accepts connections (whether or not any server is UP yet)."""
        deadline = time.monotonic() + timeout
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        while True:
            with socket.socket() as probe:
                if probe.connect_ex((host, int(port))) == 0:
                    return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited; see {self.var}/log/haproxy.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url} not listening; see {self.var}/log")
            time.sleep(0.1)

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Return once HAProxy answers and sees every server UP."""
        deadline = time.monotonic() + timeout
        while not answers_ok(f"{self.url}/healthz"):
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited; see {self.var}/log/haproxy.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url} not answering; see {self.var}/log")
            time.sleep(0.1)
        names = [s.name for s in self.servers]
        self.wait_servers("UP", names, max(1.0, deadline - time.monotonic()))

    def stop(self) -> None:
        """SIGTERM (HAProxy's hard stop: tunnels end now, browsers reconnect); then kill."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
