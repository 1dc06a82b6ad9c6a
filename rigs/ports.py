"""Free loopback ports, for stacks started by tests and bench tools side by side."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from stack.settings import EdgeLimits, StackSettings
from stack.tls import FrontTls


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` can be bound on `host` now (another address: the multi-host tests)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(taken: set[int] | None = None) -> int:
    """A port the kernel calls free (and not in `taken`, which it joins)."""
    taken = taken if taken is not None else set()
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port
    raise RuntimeError("no free port")


def free_port_run(count: int, taken: set[int] | None = None) -> int:
    """A base such that base+1 .. base+count are free (and not in `taken`)."""
    taken = taken if taken is not None else set()
    for _ in range(200):
        base = random.randrange(20000, 40000)
        ports = range(base + 1, base + count + 1)
        if all(p not in taken and port_is_free(p) for p in ports):
            taken.update(ports)
            return base
    raise RuntimeError("no run of free ports")


def settings_on_free_ports(instances: int, var: Path, auth: str = "open",
                           tls_cert: Path | None = None) -> StackSettings:
    """A whole stack (own Redis, N instances, HAProxy) on ports nobody uses now.

    Its front door has the per-address limits off: the tests and bench tools that
    start these stacks send every client from 127.0.0.1, and a storm of 2,000
    reconnects or a suite's thousand logins would be throttled as one flooding
    address. tests/test_front_limits.py checks the limits on a front door of its own.

    Open mode (a name is all a login takes) unless `auth="accounts"`: the chat
    tests and load tools log in thousands of names, not accounts; the account
    tests start stacks of their own in accounts mode.

    With `tls_cert` (a PEM: certificate, chain, key) HAProxy also serves HTTPS, on
    a free port of its own.
    """
    taken: set[int] = set()
    port_base = free_port_run(instances, taken)
    return StackSettings(
        http_port=free_port(taken),
        instances=instances,
        port_base=port_base,
        redis_port=free_port(taken),
        redis_url="",
        var=var,
        edge=EdgeLimits.per_address_off(),
        auth=auth,
        tls=FrontTls(tls_cert, free_port(taken)) if tls_cert else None,
        haproxy_metrics_port=free_port(taken),
    )
