"""Redis with Sentinel on loopback: a primary, replicas, three sentinels, run by pid.

For the Sentinel test and for trying CHAT_REDIS_SENTINELS on one machine.
Every data node runs with `min-replicas-to-write 1`: a primary cut off from
all its replicas refuses writes instead of acknowledging messages a failover
would then throw away. Two replicas, so the promoted one still has one.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis

from redisconn.connect import DEFAULT_SENTINEL_MASTER

HOST = "127.0.0.1"
# Sentinels agree a primary is down after this long without answers: short,
# so a test's failover takes seconds (production would use 5-30 s).
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10000
QUORUM = 2  # of 3 sentinels
# A write needs one replica that acknowledged the stream within this many seconds.
MIN_REPLICAS_TO_WRITE = 1
MIN_REPLICAS_MAX_LAG_SECONDS = 10
# Redis waits 5 s by default before a first full sync, hoping more replicas
# join it; ours all start together, so sync at once (seconds off every start).
REPL_SYNC_DELAY_SECONDS = 0
START_TIMEOUT_SECONDS = 30.0
FAILOVER_WAIT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.1


@dataclass
class SentinelSet:
    """Data nodes on `data_ports` (the first starts as primary), sentinels on `sentinel_ports`."""

    data_ports: list[int]
    sentinel_ports: list[int]
    folder: Path
    master: str = DEFAULT_SENTINEL_MASTER
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def sentinels(self) -> str:
        """What CHAT_REDIS_SENTINELS takes: host:port of every sentinel, comma-separated."""
        return ",".join(f"{HOST}:{p}" for p in self.sentinel_ports)

    def command(self, port: int, *args: str) -> Any:
        """One command to one node or sentinel (redis-py parses INFO and SENTINEL answers)."""
        with redis.Redis(HOST, port, socket_timeout=2, socket_connect_timeout=2,
                         decode_responses=True) as conn:
            return conn.execute_command(*args)

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Primary and replicas in sync, then sentinels that all see the primary and replicas."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make run installs it)")
        deadline = time.monotonic() + timeout
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            primary = self.data_ports[0]
            for port in self.data_ports:
                self._start_data(binary, port, None if port == primary else primary)
            for port in self.data_ports[1:]:
                self._wait(partial(self._linked, port), deadline, f"replica {port} in sync")
            for port in self.sentinel_ports:
                self._start_sentinel(binary, port, primary)
            for port in self.sentinel_ports:
                self._wait(partial(self._sees_all, port), deadline, f"sentinel {port} ready")
        except BaseException:
            self.stop()
            raise

    def _data_args(self, port: int) -> list[str]:
        folder = self.folder / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        return ["--bind", HOST, "--port", str(port), "--dir", str(folder),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                "--repl-diskless-sync-delay", str(REPL_SYNC_DELAY_SECONDS),
                "--min-replicas-to-write", str(MIN_REPLICAS_TO_WRITE),
                "--min-replicas-max-lag", str(MIN_REPLICAS_MAX_LAG_SECONDS),
                "--protected-mode", "no", "--daemonize", "no"]

    def _start_data(self, binary: str, port: int, primary: int | None) -> None:
        args = [binary, *self._data_args(port)]
        if primary is not None:
            args += ["--replicaof", HOST, str(primary)]
        self._spawn(port, args)

    def _start_sentinel(self, binary: str, port: int, primary: int) -> None:
        folder = self.folder / f"sentinel-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "sentinel.conf"  # sentinel rewrites its own config as it learns
        config.write_text(
            f"bind {HOST}\nport {port}\ndir {folder}\nprotected-mode no\n"
            f"sentinel monitor {self.master} {HOST} {primary} {QUORUM}\n"
            f"sentinel down-after-milliseconds {self.master} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {self.master} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {self.master} 1\n"
        )
        self._spawn(port, [binary, str(config), "--sentinel"])

    def _spawn(self, port: int, args: list[str]) -> None:
        with open(self.folder / f"{port}.log", "ab") as log:
            self.processes[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def _wait(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        while True:
            try:
                if ready():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"sentinel set: {what} not reached; see {self.folder}")
            time.sleep(POLL_SECONDS)

    def _linked(self, port: int) -> bool:
        info = dict(self.command(port, "INFO", "replication"))
        return bool(info.get("master_link_status") == "up")

    def _sees_all(self, port: int) -> bool:
        """A sentinel knows the primary, every replica and the other sentinels."""
        state = dict(self.command(port, "SENTINEL", "MASTER", self.master))
        return (int(state.get("num-slaves", 0)) >= len(self.data_ports) - 1
                and int(state.get("num-other-sentinels", 0)) >= len(self.sentinel_ports) - 1)

    def primary(self) -> int:
        """The primary's port as the sentinels announce it (what a client would be told)."""
        for port in self.sentinel_ports:
            if self.processes[port].poll() is not None:
                continue
            try:
                _, announced = self.command(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                            self.master)
                return int(announced)
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def kill(self, port: int) -> None:
        """kill -9 one data node by pid (a crash)."""
        proc = self.processes[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def trigger_failover(self) -> None:
        """A planned failover (SENTINEL FAILOVER): the primary hands over without a crash."""
        self.command(self.sentinel_ports[0], "SENTINEL", "FAILOVER", self.master)

    def wait_failover(self, old: int, timeout: float = FAILOVER_WAIT_SECONDS) -> int:
        """Wait until every live sentinel names a new primary that accepts writes; its port."""
        deadline = time.monotonic() + timeout
        chosen: list[int] = []

        def promoted() -> bool:
            named = {self.command(p, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)[1]
                     for p in self.sentinel_ports if self.processes[p].poll() is None}
            if len(named) != 1:
                return False
            port = int(named.pop())
            if port == old:
                return False
            info = dict(self.command(port, "INFO", "replication"))
            # Writes need MIN_REPLICAS_TO_WRITE replicas following the new primary.
            if info.get("role") != "master" or int(info.get("connected_slaves", 0)) < 1:
                return False
            chosen[:] = [port]
            return True

        self._wait(promoted, deadline, f"failover away from {old}")
        return chosen[0]

    def stop(self) -> None:
        """SIGTERM every process by pid (sentinels first, so none fails over mid-stop)."""
        order = [*self.sentinel_ports, *self.data_ports]
        for port in order:
            proc = self.processes.get(port)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for port in order:
            proc = self.processes.get(port)
            if proc is None:
                continue
            try:
                proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
