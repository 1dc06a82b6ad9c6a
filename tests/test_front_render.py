"""The front door over several hosts is the one-box haproxy.cfg with other server lines."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from stack.front import front_door_config, parse_hosts
from stack.render import Server, haproxy_config
from stack.settings import EdgeLimits, StackSettings


def test_hosts_are_named_chat1_chat2_in_the_order_given() -> None:
    assert parse_hosts("10.0.0.2:8001, 10.0.0.2:8002,10.0.0.3:8001") == [
        Server("chat1", "10.0.0.2", 8001),
        Server("chat2", "10.0.0.2", 8002),
        Server("chat3", "10.0.0.3", 8001),
    ]


@pytest.mark.parametrize("spec", ["", "10.0.0.2", "10.0.0.2:http", ":8001"])
def test_a_host_without_a_port_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_hosts(spec)


def test_front_door_keeps_the_checks_stickiness_and_redispatch(tmp_path: Path) -> None:
    servers = parse_hosts("10.0.0.2:8001,10.0.0.3:8001")
    front = front_door_config("0.0.0.0:80", servers, tmp_path)
    one_box = haproxy_config(StackSettings(var=tmp_path))
    assert "    bind 0.0.0.0:80 tcp-ut 60s\n" in front
    assert "    server chat1 10.0.0.2:8001 cookie chat1 check tcp-ut 10s\n" in front
    assert "    server chat2 10.0.0.3:8001 cookie chat2 check tcp-ut 10s" in front
    # Everything but the bind and the server lines is the one-box config.
    def rest(config: str) -> list[str]:
        return [line for line in config.splitlines()
                if not line.strip().startswith(("bind ", "server "))]
    assert rest(front) == rest(one_box)
    for wanted in ("option redispatch", "cookie chatfleet_server insert", "option httpchk",
                   "option srvtcpka"):
        assert wanted in front


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_front_door_config(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(front_door_config("127.0.0.1:8000", parse_hosts("10.0.0.2:8001"), tmp_path))
    done = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_checks_run_every_second_unless_told_otherwise(tmp_path: Path) -> None:
    default = haproxy_config(StackSettings(var=tmp_path))
    assert "    default-server inter 1000 fastinter 500ms" in default
    # Twelve HAProxy processes on one port share one HAProxy's check load (bench/crowd).
    spread = haproxy_config(StackSettings(var=tmp_path,
                                          edge=EdgeLimits(check_interval_ms=12_000)))
    assert "    default-server inter 12000 fastinter 500ms" in spread
    config = tmp_path / "haproxy.cfg"
    config.write_text(spread)
    done = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
