"""`make run`: start the whole stack under supervisord in the foreground; Ctrl-C stops it.

Also used by the cluster tests and the bench tools, so all three run the
stack from the same supervisord.conf and haproxy.cfg.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import logs
from stack.haproxy_stats import server_states, wait_server_states
from stack.limits import limit_note, raise_nofile
from stack.processes import terminate
from stack.render import prepare, supervisor_env
from stack.settings import PROJECT, StackSettings

READY_TIMEOUT_SECONDS = 60.0

log = logging.getLogger("chatfleet.stack")


class Stack:
    """One running supervisord with everything under it."""

    def __init__(
        self,
        settings: StackSettings,
        env: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        """`env`: extra environment for this stack's processes only (e.g. CHAT_RATE_LIMIT).

        `wrapper`: a command supervisord is started under, e.g. `ip netns exec
        NAME` for a "host" of the multi-host tests; it must exec, keeping the pid.
        """
        self.settings = settings
        self.extra_env = env or {}
        self.wrapper = list(wrapper)
        self.process: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.nofile = 0  # the fd limit its processes inherit, once started

    @classmethod
    def running(cls, settings: StackSettings) -> Stack:
        """A stack some other process started with these settings, for `ctl` only."""
        stack = cls(settings)
        stack.env = supervisor_env(settings)
        return stack

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    @property
    def https_url(self) -> str:
        """HAProxy's HTTPS address; only with a certificate (settings.tls)."""
        assert self.settings.tls is not None, "this stack has no certificate"
        return f"https://127.0.0.1:{self.settings.tls.port}"

    def start(self) -> None:
        self.env = {**prepare(self.settings), **self.extra_env}
        supervisord = Path(sys.executable).parent / "supervisord"
        self.nofile = raise_nofile()  # supervisord and everything under it inherit the limit
        self.process = subprocess.Popen(
            [*self.wrapper, str(supervisord), "-c", str(PROJECT / "supervisord.conf")],
            env=self.env,
            cwd=PROJECT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop supervisord in order
        )

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of each chat instance: {"chat1": "UP", "chat2": "DOWN", ...}."""
        return server_states(self.settings.var / "haproxy.sock")

    def wait_servers(self, want: str, names: list[str], timeout: float = 30.0) -> None:
        """Wait until HAProxy reports each of `names` in state `want` (UP, DOWN, ...)."""
        wait_server_states(self.settings.var / "haproxy.sock", want, names, timeout)

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Return once every instance is healthy and HAProxy (if it runs here) sees them all UP."""
        deadline = time.monotonic() + timeout
        urls = self.instance_urls("/healthz")
        if self.settings.starts_haproxy:
            urls.append(f"{self.url}/healthz")
        self._wait_healthy(urls, deadline)
        if not self.settings.starts_haproxy:
            return
        everyone = [f"chat{n}" for n in range(1, self.settings.instances + 1)]
        self.wait_servers("UP", everyone, max(1.0, deadline - time.monotonic()))

    def instance_urls(self, path: str = "") -> list[str]:
        """Each chat instance's own URL (on the stack's address), plus `path`."""
        host = self.settings.address
        return [f"http://{host}:{p}{path}" for p in self.settings.instance_ports()]

    def _wait_healthy(self, urls: list[str], deadline: float) -> None:
        for url in urls:
            while not answers_ok(url):
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"supervisord exited; see {self.settings.var}/log")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} not healthy; see {self.settings.var}/log")
                time.sleep(0.1)

    def ctl(self, *args: str) -> str:
        """Run supervisorctl against this stack, e.g. ctl("restart", "chat:chat-1")."""
        supervisorctl = Path(sys.executable).parent / "supervisorctl"
        done = subprocess.run(
            [str(supervisorctl), "-c", str(PROJECT / "supervisord.conf"), *args],
            env=self.env, capture_output=True, text=True, timeout=60, check=False,
        )
        return done.stdout + done.stderr

    def reload_haproxy(self) -> None:
        """HAProxy re-reads haproxy.cfg and its certificate into a new worker; the old
        worker keeps every connection it has (WebSockets too) until it closes."""
        if self.settings.tls is not None:
            self.settings.tls.check()  # a broken file would only fail in HAProxy's log
        answer = self.ctl("signal", "USR2", "haproxy")
        if "signalled" not in answer:
            raise RuntimeError(f"HAProxy not reloaded: {answer.strip()}")

    def haproxy_pids(self) -> list[int]:
        """HAProxy's master, then its workers (two after a reload, while the old one
        still holds connections); [] when it is not running."""
        out = self.ctl("pid", "haproxy").strip()
        if not out.isdigit() or int(out) == 0:
            return []
        master = int(out)
        try:  # what the master forked: its workers
            forked = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        except OSError:
            forked = []
        return [master, *map(int, forked)]

    def child_pids(self) -> list[int]:
        """The pids supervisord reports for its programs (0 for stopped ones is dropped)."""
        pids = []
        for line in self.ctl("pid", "all").split():
            if line.isdigit() and int(line) > 0:
                pids.append(int(line))
        return pids

    def stop(self, timeout: float = 40.0) -> None:
        """Stop supervisord (which stops its programs in order); kill any straggler by pid."""
        if self.process is None or self.process.poll() is not None:
            return
        children = self.child_pids()
        terminate(self.process, timeout)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def answers_ok(url: str) -> bool:
    """Whether `url` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the stack like Ctrl-C does
    # The instances read CHAT_LOG_FORMAT themselves (supervisord hands it down).
    logs.configure(os.environ.get("CHAT_LOG_FORMAT", "").strip() or "text", plain=True,
                   stream=sys.stdout)
    settings = StackSettings.from_env()
    stack = Stack(settings)
    try:
        stack.start()
        assert stack.process is not None
        stack.wait_ready()
        if settings.starts_haproxy:
            where = stack.url if settings.tls is None else (
                f"{stack.https_url} (plain HTTP on {stack.url} redirects there)")
            log.info("chatfleet is up: %s  (%d instances; Ctrl-C stops)", where,
                     settings.instances)
            if note := limit_note(stack.nofile):
                log.warning("%s", note)
        else:  # one host of several: the front door runs elsewhere
            log.info("chatfleet host is up: %s  (Ctrl-C stops)", " ".join(stack.instance_urls()))
        stack.process.wait()
    except KeyboardInterrupt:
        log.info("stopping chatfleet…")
    except (RuntimeError, TimeoutError) as error:
        log.error("chatfleet failed to start: %s", error)
        stack.stop()
        sys.exit(1)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
