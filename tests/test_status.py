"""`make status` (python -m stack.status): every instance's readiness, HAProxy's view and
its sockets, without supervisorctl; exit 1 when something is not well."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from rigs.ports import free_port, free_port_run
from stack.run import Stack
from stack.settings import StackSettings
from stack.status import report

PROJECT = Path(__file__).resolve().parent.parent


def test_a_whole_stack_is_all_ready_and_up(stack: Stack) -> None:
    env = {**os.environ, "CHAT_VAR": str(stack.settings.var),
           "CHAT_INSTANCES": str(stack.settings.instances),
           "CHAT_PORT_BASE": str(stack.settings.port_base),
           "CHAT_HTTP_PORT": str(stack.settings.http_port),
           "CHAT_REDIS_PORT": str(stack.settings.redis_port)}
    env.pop("CHAT_REDIS_URL", None)
    done = subprocess.run([sys.executable, "-m", "stack.status"], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (f"chatfleet: 2 instances, front door "
                        f"http://127.0.0.1:{stack.settings.http_port}")
    for n, port in enumerate(stack.settings.instance_ports(), start=1):
        row = next(line for line in lines if line.startswith(f"chat{n} "))
        assert re.match(rf"chat{n} +127\.0\.0\.1:{port} +200 ok +UP +L7OK +\d+ +\d+$", row), row
    assert lines[-1] == f"redis {stack.settings.effective_redis_url}: PONG"


def test_nothing_answering_is_not_well(tmp_path: Path) -> None:
    """A stack that is not running: no instance answers, no HAProxy, no Redis."""
    settings = StackSettings(instances=2, port_base=free_port_run(2), redis_port=free_port(),
                             var=tmp_path)
    text, well = report(settings)
    assert not well
    for n in (1, 2):
        row = next(line for line in text.splitlines() if line.startswith(f"chat{n} "))
        assert re.match(rf"chat{n} +127\.0\.0\.1:\d+ +not answering +\? +- +- +-$", row), row
    assert text.endswith(": not answering (ConnectionError)")
