"""What the failover drill does to a running stack: kill -9, graceful restart, Redis restart.

Everything goes through the stack's own supervisord (`Stack.ctl`) and its own
HAProxy stats socket, so only processes of that stack are ever touched. The
functions block; the drill runs them in a thread.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stack.run import Stack, answers_ok
from stack.settings import StackSettings

# supervisord restarts a dead instance at once; it answers /healthz about a
# second later. These bounds only catch an instance that never comes back.
RESPAWN_TIMEOUT_SECONDS = 30.0
HEALTHY_TIMEOUT_SECONDS = 30.0
# HAProxy needs `rise 2` checks one second apart; a Redis restart can take
# every instance down together, so allow for both checks and a slow start.
BACK_UP_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.1
# A Redis restart with something to do while it is down stays down this long,
# so what is sent meanwhile meets a Redis that is gone (`unavailable`).
REDIS_DOWN_SECONDS = 1.0

KILL = "kill -9"
GRACEFUL = "graceful restart"
REDIS = "redis restart"
REDIS_EMPTY = "redis data lost"


@dataclass
class ChaosAction:
    """One thing done to the stack, and how long until HAProxy had it UP again."""

    kind: str
    target: str
    at: float  # seconds into the drill
    seconds: float = 0.0  # from the action to HAProxy showing it UP again
    down_seen: bool = False  # HAProxy marked it DOWN meanwhile
    ok: bool = True
    note: str = ""


class Chaos:
    """Fault injection on one stack."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    # -- instances -------------------------------------------------------------

    def instance_pid(self, n: int) -> int | None:
        """The pid supervisord reports for chat:chat-n (None while it is not running)."""
        out = self.stack.ctl("pid", f"chat:chat-{n}").strip()
        return int(out) if out.isdigit() and int(out) > 0 else None

    def _is_our_instance(self, pid: int) -> bool:
        """Double check before kill -9: the pid runs chat_server.py on this stack's ports."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        words = [a.decode(errors="replace") for a in argv]
        base = f"--port-base={self.stack.settings.port_base}"
        return any(w.endswith("chat_server.py") for w in words) and base in words

    def kill(self, n: int, at: float) -> ChaosAction:
        action = ChaosAction(KILL, f"chat-{n}", at)
        started = time.monotonic()
        pid = self.instance_pid(n)
        if pid is None or not self._is_our_instance(pid):
            action.ok, action.note = False, f"no running chat-{n} of this stack (pid {pid})"
            return action
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + RESPAWN_TIMEOUT_SECONDS
        while True:
            action.down_seen |= self._state(n) == "DOWN"
            new = self.instance_pid(n)
            if new is not None and new != pid:
                break
            if time.monotonic() > deadline:
                action.ok, action.note = False, "supervisord did not restart it"
                return action
            time.sleep(POLL_SECONDS)
        self._back_up(action, [n], started)
        return action

    def graceful_restart(self, n: int, at: float) -> ChaosAction:
        """`supervisorctl restart`: SIGTERM, /healthz 503, sockets closed with 1012, start again."""
        action = ChaosAction(GRACEFUL, f"chat-{n}", at)
        started = time.monotonic()
        out = self.stack.ctl("restart", f"chat:chat-{n}")
        if "started" not in out:
            action.ok, action.note = False, out.strip()[:200]
            return action
        self._back_up(action, [n], started)
        return action

    def restart_redis(self, at: float, lose_data: bool = False,
                      while_down: Callable[[], None] | None = None) -> ChaosAction:
        """`supervisorctl restart redis`: its AOF keeps sessions and history.

        `lose_data`: stop it, remove its files (the stack's own `var/redis`
        folder), start it empty: every session, room and message is gone.
        `while_down`: stop it, call this, wait REDIS_DOWN_SECONDS, start it.
        """
        action = ChaosAction(REDIS_EMPTY if lose_data else REDIS, "redis", at)
        started = time.monotonic()
        if lose_data or while_down is not None:
            out = self.stack.ctl("stop", "redis")
            if "stopped" not in out:
                action.ok, action.note = False, out.strip()[:200]
                return action
            folder = self.stack.settings.var / "redis"
            for path in folder.iterdir() if lose_data and folder.is_dir() else []:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            if while_down is not None:
                while_down()
                time.sleep(REDIS_DOWN_SECONDS)
            out = self.stack.ctl("start", "redis")
        else:
            out = self.stack.ctl("restart", "redis")
        if "started" not in out:
            action.ok, action.note = False, out.strip()[:200]
            return action
        self._back_up(action, list(range(1, self.stack.settings.instances + 1)), started)
        return action

    # -- waiting -----------------------------------------------------------------

    def _state(self, n: int) -> str:
        try:
            return self.stack.server_states().get(f"chat{n}", "?")
        except OSError:
            return "?"

    def _back_up(self, action: ChaosAction, numbers: list[int], started: float) -> None:
        """Wait until each instance answers /healthz itself and HAProxy shows it UP."""
        ports = self.stack.settings.instance_ports()
        deadline = time.monotonic() + HEALTHY_TIMEOUT_SECONDS
        for n in numbers:
            url = f"http://127.0.0.1:{ports[n - 1]}/healthz"
            while not answers_ok(url):
                action.down_seen |= self._state(n) == "DOWN"
                if time.monotonic() > deadline:
                    action.ok, action.note = False, f"chat-{n} never answered /healthz"
                    return
                time.sleep(POLL_SECONDS)
        deadline = time.monotonic() + BACK_UP_TIMEOUT_SECONDS
        names = [f"chat{n}" for n in numbers]
        while True:
            states = _states(self.stack)
            action.down_seen |= any(states.get(name) == "DOWN" for name in names)
            if all(states.get(name) == "UP" for name in names):
                break
            if time.monotonic() > deadline:
                action.ok, action.note = False, f"HAProxy still shows {states}"
                return
            time.sleep(POLL_SECONDS)
        action.seconds = time.monotonic() - started


def _states(stack: Stack) -> dict[str, str]:
    try:
        return stack.server_states()
    except OSError:
        return {}


def attach(url: str, var: Path, redis_url: str) -> Stack:
    """A Stack object for a stack someone else started (`make run`), to drive, never to stop.

    Its instances are read from the rendered `var/haproxy.cfg`; supervisorctl
    only needs the environment the config file expands.
    """
    var = var.resolve()
    config = (var / "haproxy.cfg").read_text()
    ports = [int(p) for p in re.findall(r"^\s*server chat\d+ 127\.0\.0\.1:(\d+)", config, re.M)]
    bind = re.search(r"^\s*bind 127\.0\.0\.1:(\d+)", config, re.M)
    http_port = int(bind.group(1)) if bind else int(url.rstrip("/").rsplit(":", 1)[1])
    if not ports:
        raise ValueError(f"no chat servers in {var / 'haproxy.cfg'}")
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    settings = StackSettings(
        http_port=http_port,
        instances=len(ports),
        port_base=min(ports) - 1,
        redis_port=redis_port,
        redis_url="",
        var=var,
    )
    stack = Stack(settings)  # never started here, so Stack.stop() leaves it alone
    stack.env = dict(os.environ)
    stack.env.update(
        CHAT_VAR=str(var),
        CHAT_PYTHON=sys.executable,
        CHAT_INSTANCES=str(len(ports)),
        CHAT_PORT_BASE=str(settings.port_base),
        CHAT_REDIS_URL=redis_url,
        CHAT_REDIS_PORT=str(redis_port),
        CHAT_START_REDIS="true",
        CHAT_HTTP_PORT=str(http_port),
    )
    return stack
