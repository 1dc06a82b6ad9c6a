"""A real Redis Cluster from Debian's redis-server: P primaries, P replicas, run by pid.

For the multi-host tests and for trying the cluster mode on one machine:

    python -m rigs.redis_cluster --host 127.0.0.1 --ports 7000-7005 --dir var/cluster

starts six nodes, joins them (`redis-cli --cluster create ... --cluster-replicas 1`),
prints the seeds for CHAT_REDIS_CLUSTER and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis

from rigs.ports import port_is_free

# A primary is judged failed after this long without answers, and its
# replica starts an election soon after: short, so a test's failover takes
# seconds, not the default 15 s.
NODE_TIMEOUT_MS = 2000
# A cluster node also listens on port + 10000 for the cluster bus.
BUS_PORT_OFFSET = 10000
# Redis waits 5 s by default before a first full sync, hoping more replicas
# join it; ours all start together, so sync at once (seconds off every start).
REPL_SYNC_DELAY_SECONDS = 0
START_TIMEOUT_SECONDS = 30.0
FAILOVER_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.1
SLOTS = 16384
# `redis-cli --cluster create` wants at least this many primaries; fewer are joined by hand.
MIN_CLI_PRIMARIES = 3


@dataclass(frozen=True)
class NodeView:
    """One line of CLUSTER NODES, as much as the tests need."""

    node_id: str
    address: str  # host:port
    flags: frozenset[str]
    primary_id: str  # "-" for a primary
    slots: int  # how many slots it serves

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return "fail" in self.flags or "fail?" in self.flags


def _slot_count(ranges: Sequence[str]) -> int:
    count = 0
    for item in ranges:
        if item.startswith("["):  # a slot being migrated, not served
            continue
        low, _, high = item.partition("-")
        count += int(high or low) - int(low) + 1
    return count


def parse_nodes(text: str) -> list[NodeView]:
    nodes = []
    for line in text.strip().splitlines():
        parts = line.split()
        address = parts[1].split("@", 1)[0]
        nodes.append(NodeView(parts[0], address, frozenset(parts[2].split(",")),
                              parts[3], _slot_count(parts[8:])))
    return nodes


def free_cluster_ports(host: str, count: int, taken: set[int] | None = None) -> list[int]:
    """`count` ports p with p and p + 10000 (the cluster bus) free on `host` and loopback."""
    taken = taken if taken is not None else set()
    ports: list[int] = []
    # Below Linux's ephemeral range (32768+), bus ports included, so an outgoing
    # connection cannot take one between this check and the node's bind; random
    # order, so two runs side by side rarely try the same ports first.
    for candidate in random.sample(range(10000, 20000), 10000):
        if len(ports) == count:
            break
        pair = (candidate, candidate + BUS_PORT_OFFSET)
        if any(p in taken for p in pair):
            continue
        if all(port_is_free(p, host) and port_is_free(p) for p in pair):
            ports.append(candidate)
            taken.update(pair)
    if len(ports) < count:
        raise RuntimeError(f"no {count} free cluster ports on {host}")
    return ports


@dataclass
class RedisCluster:
    """`len(ports)` nodes on `host` (`replicas` per primary, the primaries first) with data
    under `folder`."""

    host: str
    ports: list[int]
    folder: Path
    replicas: int = 1
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Primaries (ports) when a node was last killed: the heir is the new one.
    primaries_at_kill: set[int] = field(default_factory=set)

    @property
    def seeds(self) -> str:
        """What CHAT_REDIS_CLUSTER takes: every node's host:port, comma-separated."""
        return ",".join(f"{self.host}:{p}" for p in self.ports)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(self.host, port, socket_timeout=2, socket_connect_timeout=2,
                           decode_responses=True)

    def command(self, port: int, *args: str) -> Any:
        """One command to one node (CLUSTER ..., INFO ...), answered as text."""
        with self.client(port) as conn:
            return conn.execute_command(*args)

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start every node, join them into one cluster, wait until all say cluster_state:ok."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make run installs it)")
        try:
            for port in self.ports:
                self._start_node(binary, port)
            deadline = time.monotonic() + timeout
            for port in self.ports:
                self._wait(partial(self._answers, port), deadline, f"node {port} up")
            self._create()
            self.wait_ok(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise

    def _start_node(self, binary: str, port: int) -> None:
        folder = self.folder / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "redis.log", "ab") as log:
            self.processes[port] = subprocess.Popen(
                [binary, "--bind", self.host, "--port", str(port), "--dir", str(folder),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                 "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                 "--repl-diskless-sync-delay", str(REPL_SYNC_DELAY_SECONDS),
                 "--protected-mode", "no", "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT,
            )

    @property
    def primary_ports(self) -> list[int]:
        """The ports that start as primaries (the first 1 / (1 + replicas) of `ports`)."""
        return self.ports[:len(self.ports) // (1 + self.replicas)]

    def _create(self) -> None:
        if len(self.primary_ports) < MIN_CLI_PRIMARIES:
            self._create_by_hand()
            return
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (package redis-tools)")
        done = subprocess.run(
            [cli, "--cluster", "create", *(f"{self.host}:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")

    def _create_by_hand(self) -> None:
        """What `redis-cli --cluster create` refuses below 3 primaries (a 1-shard
        cluster for the bench's scaling table): meet, split the slots, replicate."""
        primaries = self.primary_ports
        for port in self.ports[1:]:
            self.command(port, "CLUSTER", "MEET", self.host, str(self.ports[0]))
        for i, port in enumerate(primaries):
            low, high = i * SLOTS // len(primaries), (i + 1) * SLOTS // len(primaries) - 1
            self.command(port, "CLUSTER", "ADDSLOTSRANGE", str(low), str(high))
        ids = {port: str(self.command(port, "CLUSTER", "MYID")) for port in primaries}
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        for n, port in enumerate(self.ports[len(primaries):]):
            primary_id = ids[primaries[n % len(primaries)]]
            self._wait(partial(self._knows, port, primary_id), deadline, f"{port} meets all")
            self.command(port, "CLUSTER", "REPLICATE", primary_id)

    def _knows(self, port: int, node_id: str) -> bool:
        return any(n.node_id == node_id for n in self.nodes(port))

    def _answers(self, port: int) -> bool:
        if self.processes[port].poll() is not None:  # e.g. its port or bus port is taken
            raise RuntimeError(f"redis node {port} exited; see {self.folder / str(port)}")
        try:
            return bool(self.command(port, "PING"))
        except redis.RedisError:
            return False

    def _state_ok(self, port: int) -> bool:
        try:
            info = str(self.command(port, "CLUSTER", "INFO"))
        except redis.RedisError:
            return False
        return "cluster_state:ok" in info

    def _wait(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis cluster: {what} not reached; see {self.folder}")
            time.sleep(POLL_SECONDS)

    def alive_ports(self) -> list[int]:
        return [p for p, proc in self.processes.items() if proc.poll() is None]

    def nodes(self, port: int | None = None) -> list[NodeView]:
        """CLUSTER NODES as seen by `port` (default: the first live node)."""
        asked = port if port is not None else self.alive_ports()[0]
        return parse_nodes(str(self.command(asked, "CLUSTER", "NODES")))

    def wait_ok(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Every live node says cluster_state:ok and sees all slots served by live primaries."""
        deadline = time.monotonic() + timeout
        for port in self.alive_ports():
            self._wait(partial(self._healthy, port), deadline, f"cluster_state:ok on {port}")

    def _healthy(self, port: int) -> bool:
        return self._state_ok(port) and self._all_slots_live(port)

    def _all_slots_live(self, port: int) -> bool:
        """`port` sees every slot served by a live primary, each primary with its replicas,
        and, when it is a replica itself, its link to its primary is up (data in sync)."""
        try:
            nodes = self.nodes(port)
            replication = dict(self.command(port, "INFO", "replication"))  # parsed by redis-py
        except redis.RedisError:
            return False
        live = [n for n in nodes if not n.failed]
        primaries = [n for n in live if n.is_primary and n.slots > 0]
        replicas = [n for n in live if not n.is_primary and n.primary_id != "-"]
        if sum(n.slots for n in primaries) != SLOTS:
            return False
        if len(replicas) < len(primaries) * self.replicas and len(live) == len(self.ports):
            return False
        return bool(replication.get("role") == "master"
                    or replication.get("master_link_status") == "up")

    def primary_for(self, key: str) -> int:
        """The port of the primary serving `key` now (its hash tag decides the slot)."""
        port = self.alive_ports()[0]
        slot = int(self.command(port, "CLUSTER", "KEYSLOT", key))
        for line in self.command(port, "CLUSTER", "SLOTS"):
            low, high, primary = int(line[0]), int(line[1]), line[2]
            if low <= slot <= high:
                return int(primary[1])
        raise RuntimeError(f"no primary serves slot {slot}")

    def primaries(self) -> list[int]:
        return sorted(n.port for n in self.nodes() if n.is_primary and not n.failed)

    def kill(self, port: int) -> None:
        """kill -9 one node, by its pid (a crash: no shutdown, no last AOF write)."""
        self.primaries_at_kill = set(self.primaries())
        proc = self.processes[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def wait_failover(self, dead_port: int, timeout: float = FAILOVER_TIMEOUT_SECONDS) -> int:
        """After the primary on `dead_port` was killed: wait until its replica serves its
        slots and every live node says cluster_state:ok; return the new primary's port."""
        deadline = time.monotonic() + timeout
        heirs: list[int] = []

        def promoted() -> bool:
            try:
                nodes = self.nodes()
            except redis.RedisError:
                return False
            if not any(n.port == dead_port and n.failed for n in nodes):
                return False
            live = [n for n in nodes if n.is_primary and not n.failed and n.slots > 0]
            heirs[:] = [n.port for n in live if n.port not in self.primaries_at_kill]
            return sum(n.slots for n in live) == SLOTS and bool(heirs)

        self._wait(promoted, deadline, f"failover of {dead_port}")
        self.wait_ok(max(1.0, deadline - time.monotonic()))
        return heirs[0]

    def stop(self) -> None:
        """SIGTERM every node by pid, wait, SIGKILL any that lingers."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ports(spec: str) -> list[int]:
    if "-" in spec:
        low, high = spec.split("-", 1)
        return list(range(int(low), int(high) + 1))
    return [int(p) for p in spec.split(",")]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rigs.redis_cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address every node binds")
    parser.add_argument("--ports", default="7000-7005",
                        help="node ports, a range or comma-separated (2 x primaries)")
    parser.add_argument("--dir", type=Path, default=Path("var") / "cluster",
                        help="data folder (one sub-folder per node)")
    args = parser.parse_args(argv)
    cluster = RedisCluster(args.host, _ports(args.ports), args.dir.resolve())
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        cluster.start()
        print(f"redis cluster is up: CHAT_REDIS_CLUSTER={cluster.seeds}  (Ctrl-C stops)",
              flush=True)
        while cluster.alive_ports():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as error:
        print(f"redis cluster failed: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
