"""Prepare a state folder for supervisord: secret, rendered haproxy.cfg, environment."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from stack.settings import PROJECT, StackSettings

COOKIE_SECRET_BYTES = 32


def ensure_cookie_secret(var: Path) -> Path:
    """Make the shared cookie secret once; every instance reads the same file."""
    path = var / "cookie_secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(COOKIE_SECRET_BYTES) + "\n")
    return path


def haproxy_config(settings: StackSettings) -> str:
    template = (PROJECT / "haproxy.cfg").read_text()
    servers = "\n".join(
        f"    server chat{n} 127.0.0.1:{port} cookie chat{n} check"
        for n, port in enumerate(settings.instance_ports(), start=1)
    )
    filled = {
        "http_port": str(settings.http_port),
        "servers": servers,
        "var": str(settings.var),
        "project": str(PROJECT),
    }
    for name, value in filled.items():
        template = template.replace("{{" + name + "}}", value)
    return template


def prepare(settings: StackSettings) -> dict[str, str]:
    """Write what supervisord.conf refers to; return the environment it expands."""
    for sub in ("log", "redis"):
        (settings.var / sub).mkdir(parents=True, exist_ok=True)
    ensure_cookie_secret(settings.var)
    (settings.var / "haproxy.cfg").write_text(haproxy_config(settings))
    env = dict(os.environ)
    env.update(
        CHAT_VAR=str(settings.var),
        CHAT_PYTHON=sys.executable,
        CHAT_INSTANCES=str(settings.instances),
        CHAT_PORT_BASE=str(settings.port_base),
        CHAT_REDIS_URL=settings.effective_redis_url,
        CHAT_REDIS_PORT=str(settings.redis_port),
        CHAT_START_REDIS="true" if settings.starts_redis else "false",
        CHAT_HTTP_PORT=str(settings.http_port),
    )
    return env
