"""Prepare a state folder for supervisord: secret, rendered haproxy.cfg, environment.

haproxy.cfg is one template for both shapes: the one-box stack (servers on
127.0.0.1) and the front door over several hosts (`stack.hosts`), so both get
the same checks, stickiness and redispatch.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from stack.settings import PROJECT, EdgeLimits, StackSettings
from stack.tls import TLS_PLACEHOLDERS, FrontTls

COOKIE_SECRET_BYTES = 32
# A tunnel whose data the server has not acknowledged for this long is cut, so
# the browser reconnects elsewhere (a host that vanished sends no FIN; see
# haproxy.cfg's srvtcpka for idle tunnels). On each server line because
# HAProxy 2.6 takes `tcp-ut` from there but not from `default-server`.
SERVER_TCP_USER_TIMEOUT = "10s"


class Server(NamedTuple):
    """One chat process as HAProxy sees it; `name` is also its stickiness cookie value.

    `unix`: its Unix socket when HAProxy runs beside it (cheaper than TCP); then
    host:port is only for everyone else (tests, tools, a look with curl).
    """

    name: str
    host: str
    port: int
    unix: str = ""


def ensure_cookie_secret(var: Path) -> Path:
    """Make the shared cookie secret once; every instance reads the same file."""
    path = var / "cookie_secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(COOKIE_SECRET_BYTES) + "\n")
    return path


def server_lines(servers: Sequence[Server]) -> str:
    """The backend's server lines: checked, and pinned by the `chatfleet_server` cookie."""
    return "\n".join(
        f"    server {s.name} unix@{s.unix} cookie {s.name} check" if s.unix else
        f"    server {s.name} {s.host}:{s.port} cookie {s.name} check"
        f" tcp-ut {SERVER_TCP_USER_TIMEOUT}"
        for s in servers
    )


def fill_haproxy_template(bind: str, servers: Sequence[Server], var: Path,
                          limits: EdgeLimits | None = None, tls: FrontTls | None = None,
                          metrics_bind: str = "") -> str:
    """The project's haproxy.cfg with its front `bind`, its servers, its state folder,
    its limits (default: EdgeLimits(), an internet-facing front door's), with
    `tls` HTTPS on the same host (plain HTTP then redirects to it), and HAProxy's
    Prometheus exporter on `metrics_bind` (address:port).

    A line that names a per-address limit which is 0 (off) is left out, and so
    is every TLS line without `tls`, and the exporter's whole section (up to
    its blank line) without a `metrics_bind`.
    """
    limits = limits or EdgeLimits()
    text = (PROJECT / "haproxy.cfg").read_text()
    if not metrics_bind:
        text = "\n\n".join(section for section in text.split("\n\n")
                           if "{{metrics_bind}}" not in section)
    lines = text.splitlines(keepends=True)
    per_address = {
        "max_conns_per_address": limits.max_conns_per_address,
        "max_new_conns_per_address": limits.max_new_conns_per_address,
        "max_logins_per_address": limits.max_logins_per_address,
    }
    off = [name for name, value in per_address.items() if value <= 0]
    if tls is None:
        off += TLS_PLACEHOLDERS
    marks = ["{{" + name + "}}" for name in off]
    template = "".join(line for line in lines if not any(mark in line for mark in marks))
    filled = {
        "bind": bind,
        "metrics_bind": metrics_bind,
        "servers": server_lines(servers),
        "var": str(var),
        "project": str(PROJECT),
        "max_body_bytes": str(limits.max_body_bytes),
        "check_interval_ms": str(max(100, limits.check_interval_ms)),
        # With HTTPS, plain HTTP only redirects: the stickiness cookie needs no plain HTTP.
        "cookie_secure": " secure" if tls else "",
        **{name: str(value) for name, value in per_address.items()},
        **(tls.template_values(bind) if tls else {}),
    }
    for name, value in filled.items():
        template = template.replace("{{" + name + "}}", value)
    return template


def local_servers(settings: StackSettings) -> list[Server]:
    """chat1..chatN of one box, on its address."""
    unix = bool(settings.unix_socket_dir)
    return [
        Server(f"chat{n}", settings.address, port,
               str(settings.unix_socket(n)) if unix else "")
        for n, port in enumerate(settings.instance_ports(), start=1)
    ]


def haproxy_config(settings: StackSettings) -> str:
    return fill_haproxy_template(
        f"127.0.0.1:{settings.http_port}", local_servers(settings), settings.var, settings.edge,
        settings.tls,
        settings.haproxy_metrics_bind,
    )


def prepare(settings: StackSettings) -> dict[str, str]:
    """Write what supervisord.conf refers to; return the environment it expands."""
    for sub in ("log", "redis"):
        (settings.var / sub).mkdir(parents=True, exist_ok=True)
    ensure_cookie_secret(settings.var)
    if settings.starts_haproxy:
        if settings.tls:
            settings.tls.check()
        (settings.var / "haproxy.cfg").write_text(haproxy_config(settings))
    return supervisor_env(settings)


def supervisor_env(settings: StackSettings) -> dict[str, str]:
    """The environment supervisord.conf expands (supervisorctl needs it as well)."""
    env = dict(os.environ)
    env.update(
        CHAT_VAR=str(settings.var),
        CHAT_PYTHON=sys.executable,
        CHAT_INSTANCES=str(settings.instances),
        CHAT_PORT_BASE=str(settings.port_base),
        CHAT_ADDRESS=settings.address,
        CHAT_UNIX_SOCKET_DIR=settings.unix_socket_dir,
        CHAT_REDIS_URL=settings.instance_redis_url,
        CHAT_REDIS_SOCKET=settings.redis_socket,
        CHAT_REDIS_PORT=str(settings.redis_port),
        CHAT_REDIS_MAXMEMORY=settings.redis_maxmemory,
        CHAT_START_REDIS="true" if settings.starts_redis else "false",
        CHAT_START_HAPROXY="true" if settings.starts_haproxy else "false",
        CHAT_HTTP_PORT=str(settings.http_port),
        CHAT_REDIS_SENTINEL_MASTER=settings.sentinel_master,
        # The instances' body limit is HAProxy's; whose forwarded headers they believe.
        CHAT_MAX_BODY_BYTES=str(settings.edge.max_body_bytes),
        CHAT_TRUSTED_PROXIES=settings.instance_trusted_proxies,
        CHAT_AUTH=settings.auth,
        CHAT_SIGNUPS_PER_HOUR=str(settings.edge.max_signups_per_address_hour),
    )
    # The instances read these themselves (supervisord hands its environment
    # down); an empty one is dropped so a stale value in our own environment
    # never points a stack at the wrong Redis.
    for name, value in (("CHAT_REDIS_CLUSTER", settings.redis_cluster),
                        ("CHAT_REDIS_SENTINELS", settings.redis_sentinels)):
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    return env
