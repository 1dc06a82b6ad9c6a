"""Servers a benchmark runs against: chatfleet's stack, the python-socketio peer, or the Node one.

    target = start_target("chatfleet", 2, var)   # or "socketio", or "node"
    try:
        ...  # clients connect to target.url (HAProxy) or target.instance_urls
    finally:
        target.stop()

Both kinds look the same to a bench tool: a HAProxy front URL, the direct URL
of each process, the pids to read CPU from (server processes plus Redis), a
way to kill one process with SIGKILL (it comes back by itself, as under
supervisord), and `stop()`, which ends every process the target started, by
pid. A chatfleet stack started here has the rate limit off: a benchmark
floods on purpose. A peer can share a Redis another target started (`redis=`).

The Node peer ("node": bench/peers/node-socketio, Socket.IO 4 with
@socket.io/redis-adapter) speaks the same Socket.IO protocol as the
python-socketio one, so the same clients measure both. It needs `node` and
its npm packages: `make node-peer` (bench/peers/node_install.py) installs them.
"node-unix" is the same peer reaching Redis over its Unix socket, as
chatfleet's processes do on one box: "node" connects as its users write it
(a `redis://` URL), "node-unix" shows what the socket alone would give it.

chatfleet can also run on a Redis Cluster of S primaries started here
(`redis_shards=S`, rigs.redis_cluster), so a bench can show how fan-out
spreads over shards; the peer has no cluster mode.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from rigs.ports import free_port, free_port_run, settings_on_free_ports
from rigs.redis_cluster import RedisCluster, free_cluster_ports
from stack.haproxy_stats import read_show_stat
from stack.run import Stack, answers_ok
from stack.settings import PROJECT, EdgeLimits

KINDS = ("chatfleet", "socketio", "node", "node-unix")

# A benchmark floods on purpose: no per-user rate limit (0 = off), for this
# stack only. Callers may add more (e.g. for an idle or storm run).
CHATFLEET_BENCH_ENV = {"CHAT_RATE_LIMIT": "0"}

# Redis as supervisord.conf runs it for chatfleet (AOF, fsync every second),
# so the peer pays the same Redis when it starts its own.
REDIS_FLAGS = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
               "--daemonize", "no", "--protected-mode", "yes"]
# The peers' pub/sub channels: their own names, so they never clash with chatfleet's.
PEER_CHANNEL = "bench-socketio"
NODE_PEER_KEY = "bench-node"
NODE_PEER_DIR = PROJECT / "bench" / "peers" / "node-socketio"

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class RedisRef:
    """A running Redis: its URL and the pid whose CPU it spends; the Unix socket
    it also listens on, if any."""

    url: str
    pid: int
    socket: str = ""


class Target(Protocol):
    """What every bench tool may use of a running server."""

    @property
    def protocol(self) -> str:
        """"chatfleet" or "socketio": which wire protocol clients speak."""

    @property
    def url(self) -> str:
        """HAProxy's front, http://127.0.0.1:PORT."""

    @property
    def instance_urls(self) -> list[str]:
        """Each server process directly, instance 1 first."""

    @property
    def redis(self) -> RedisRef:
        """The Redis the servers use."""

    def instance_pids(self) -> list[int]:
        """Pids of the server processes now, instance 1 first (0 while one is down)."""

    def server_pids(self) -> list[int]:
        """Server processes plus Redis: the CPU a benchmark charges to the server."""

    def redis_pids(self) -> list[int]:
        """The Redis processes that serve the data: one, or each shard's primary."""

    def front_pids(self) -> list[int]:
        """The HAProxy in front: its CPU is the front door's, reported apart."""

    def kill_instance(self, n: int) -> int:
        """SIGKILL instance n (1-based); it is restarted like supervisord does. The old pid."""

    def stop_instances(self) -> None:
        """Stop the server processes only; Redis (perhaps shared) and HAProxy stay up."""

    def stop(self) -> None:
        """Stop every process this target started (never a shared Redis it was given)."""


def start_target(
    kind: str,
    instances: int,
    var: Path,
    *,
    env: dict[str, str] | None = None,
    redis: RedisRef | None = None,
    redis_shards: int = 0,
    cluster_replicas: int = 0,
    edge: EdgeLimits | None = None,
    auth: str = "open",
) -> Target:
    """Start `instances` server processes of `kind` behind HAProxy; return once all are UP.

    `var`: an empty folder for configs and logs. `env`: extra environment for
    the server processes. `redis`: use this Redis instead of starting one.
    `redis_shards` > 0 (chatfleet only): start a Redis Cluster of that many
    primaries, each with `cluster_replicas` replicas, instead of one Redis.
    `edge` (chatfleet only): the front door's per-address limits; by default
    off, since every bench client connects from loopback. `auth` (chatfleet
    only): "open" (a name is all a login takes: the load tools log in thousands
    of names) or "accounts" (a name needs its password; bench/logins.py).
    """
    if kind != "chatfleet" and auth != "open":
        raise ValueError("only chatfleet has accounts")
    if redis_shards > 0:
        if kind != "chatfleet" or redis is not None:
            raise ValueError("a Redis Cluster is for chatfleet with a Redis of its own only")
        return ClusterChatfleetTarget.start_on_cluster(
            instances, var, env or {}, redis_shards, cluster_replicas, auth)
    if kind == "chatfleet":
        return ChatfleetTarget.start(instances, var, env or {}, redis, edge, auth)
    if kind == "socketio":
        return SocketioTarget.start(instances, var, env or {}, redis)
    if kind == "node":
        return NodeTarget.start(instances, var, env or {}, redis)
    if kind == "node-unix":
        return NodeUnixTarget.start(instances, var, env or {}, redis)
    raise ValueError(f"unknown target kind {kind!r}; one of {', '.join(KINDS)}")


# -- chatfleet ------------------------------------------------------------------


class ChatfleetTarget:
    """chatfleet's own stack (supervisord, Redis, N Tornado processes, HAProxy)."""

    protocol = "chatfleet"

    def __init__(self, stack: Stack, shared_redis: RedisRef | None) -> None:
        self.stack = stack
        self.url = stack.url
        self.instance_urls = [f"http://127.0.0.1:{p}" for p in stack.settings.instance_ports()]
        self.redis = shared_redis or RedisRef(
            stack.settings.effective_redis_url, _supervised_pid(stack, "redis"),
            stack.settings.redis_socket)

    @classmethod
    def start(cls, instances: int, var: Path, env: dict[str, str],
              redis: RedisRef | None, edge: EdgeLimits | None = None,
              auth: str = "open") -> ChatfleetTarget:
        # Per-address limits stay off unless asked for (settings_on_free_ports):
        # every bench client connects from 127.0.0.1.
        settings = settings_on_free_ports(instances, var, auth=auth)
        if edge is not None:
            settings = replace(settings, edge=edge)
        if redis is not None:
            settings = replace(settings, redis_url=redis.url)
        stack = Stack(settings, env={**CHATFLEET_BENCH_ENV, **env})
        stack.start()
        try:
            stack.wait_ready()
            return cls(stack, redis)
        except BaseException:
            stack.stop()  # never leave a half-started stack behind
            raise

    def instance_pids(self) -> list[int]:
        return [_supervised_pid(self.stack, f"chat:chat-{n}")
                for n in range(1, self.stack.settings.instances + 1)]

    def server_pids(self) -> list[int]:
        return [pid for pid in self.instance_pids() if pid] + [self.redis.pid]

    def redis_pids(self) -> list[int]:
        return [self.redis.pid]

    def front_pids(self) -> list[int]:
        """HAProxy's master (`-W`, for reloads) and its worker, which does the work."""
        pid = _supervised_pid(self.stack, "haproxy")
        return [pid, *_children(pid)] if pid else []

    def kill_instance(self, n: int) -> int:
        pid = _supervised_pid(self.stack, f"chat:chat-{n}")
        if pid:
            os.kill(pid, signal.SIGKILL)  # supervisord (autorestart) starts it again
        return pid

    def stop_instances(self) -> None:
        self.stack.ctl("stop", "chat:*")

    def stop(self) -> None:
        self.stack.stop()


class ClusterChatfleetTarget(ChatfleetTarget):
    """chatfleet's stack (no Redis of its own) on a Redis Cluster started here by pid.

    The instances get the cluster's seeds (CHAT_REDIS_CLUSTER), so room keys
    and SPUBLISH/SSUBSCRIBE land on the shard owning each room's hash tag.
    """

    def __init__(self, stack: Stack, cluster: RedisCluster) -> None:
        first = cluster.processes[cluster.primary_ports[0]].pid
        super().__init__(stack, RedisRef(f"cluster {cluster.seeds}", first))
        self.cluster = cluster

    @classmethod
    def start_on_cluster(cls, instances: int, var: Path, env: dict[str, str], shards: int,
                         replicas: int, auth: str = "open") -> ClusterChatfleetTarget:
        ports = free_cluster_ports("127.0.0.1", shards * (1 + replicas))
        cluster = RedisCluster("127.0.0.1", ports, var / "cluster", replicas=replicas)
        cluster.start()
        try:
            settings = replace(settings_on_free_ports(instances, var, auth=auth),
                               redis_cluster=cluster.seeds)
            stack = Stack(settings, env={**CHATFLEET_BENCH_ENV, **env})
            stack.start()
            try:
                stack.wait_ready()
                return cls(stack, cluster)
            except BaseException:
                stack.stop()
                raise
        except BaseException:
            cluster.stop()
            raise

    def server_pids(self) -> list[int]:
        """The instances and every cluster node (replicas too: replication is server work)."""
        return ([pid for pid in self.instance_pids() if pid]
                + [p.pid for p in self.cluster.processes.values() if p.poll() is None])

    def redis_pids(self) -> list[int]:
        """Each shard's primary, in the order of `cluster.primary_ports`."""
        return [self.cluster.processes[port].pid for port in self.cluster.primary_ports]

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.cluster.stop()


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _supervised_pid(stack: Stack, program: str) -> int:
    out = stack.ctl("pid", program).strip()
    return int(out) if out.isdigit() else 0


# -- the python-socketio peer ---------------------------------------------------------


@dataclass
class SocketioTarget:
    """N `bench.peers.socketio_redis` processes and a HAProxy, started by pid here."""

    var: Path
    ports: list[int]
    http_port: int
    redis: RedisRef
    env: dict[str, str]
    own_redis: subprocess.Popen[bytes] | None = None
    haproxy: subprocess.Popen[bytes] | None = None
    peers: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    protocol: str = "socketio"
    sticky = False  # HAProxy pins a client to a peer by cookie (class-wide)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def instance_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    @classmethod
    def start(cls, instances: int, var: Path, env: dict[str, str],
              redis: RedisRef | None) -> SocketioTarget:
        (var / "log").mkdir(parents=True, exist_ok=True)
        taken: set[int] = set()
        base = free_port_run(instances, taken)
        target = cls(var=var, ports=[base + n for n in range(1, instances + 1)],
                     http_port=free_port(taken), redis=redis or RedisRef("", 0),
                     env={**os.environ, **env})
        try:
            if redis is None:
                target._start_redis(free_port(taken))
            target.peers = [target._spawn_peer(n) for n in range(1, instances + 1)]
            (var / "peer-haproxy.cfg").write_text(
                peer_haproxy_config(target, sticky=cls.sticky))
            target.haproxy = _spawn(["haproxy", "-db", "-f", str(var / "peer-haproxy.cfg")],
                                    var / "log" / "peer-haproxy.log", target.env)
            target.wait_ready()
        except BaseException:
            target.stop()
            raise
        return target

    def _start_redis(self, port: int) -> None:
        folder = self.var / "redis"
        folder.mkdir(exist_ok=True)
        binary = shutil.which("redis-server") or "redis-server"
        sock = folder / "redis.sock"
        self.own_redis = _spawn(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
             "--unixsocket", str(sock), "--unixsocketperm", "700",
             *REDIS_FLAGS], self.var / "log" / "redis.log", self.env)
        self.redis = RedisRef(f"redis://127.0.0.1:{port}/0", self.own_redis.pid, str(sock))
        _wait_port(port, self.own_redis)

    def peer_command(self, n: int) -> list[str]:
        """How peer n is started."""
        return [sys.executable, "-m", "bench.peers.socketio_redis",
                "--port", str(self.ports[n - 1]), "--redis-url", self.redis.url,
                "--channel", PEER_CHANNEL, "--name", f"peer{n}"]

    def _spawn_peer(self, n: int) -> subprocess.Popen[bytes]:
        return _spawn(self.peer_command(n), self.var / "log" / f"peer-{n}.log", self.env)

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Every peer answers /healthz, and HAProxy shows them all UP."""
        deadline = time.monotonic() + timeout
        for url in [*self.instance_urls, self.url]:
            while not answers_ok(f"{url}/healthz"):
                dead = [p for p in self.peers if p is not None and p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"{url} not healthy; see {self.var}/log")
                time.sleep(POLL_SECONDS)
        names = {f"peer{n}" for n in range(1, len(self.ports) + 1)}
        while {k for k, v in self.server_states().items() if v == "UP"} != names:
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy shows {self.server_states()}")
            time.sleep(POLL_SECONDS)

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of each peer: {"peer1": "UP", ...}."""
        try:
            return haproxy_states(self.var / "peer-haproxy.sock", "peer_instances")
        except OSError:
            return {}

    def instance_pids(self) -> list[int]:
        return [p.pid if p is not None and p.poll() is None else 0 for p in self.peers]

    def server_pids(self) -> list[int]:
        return [pid for pid in self.instance_pids() if pid] + [self.redis.pid]

    def redis_pids(self) -> list[int]:
        return [self.redis.pid]

    def front_pids(self) -> list[int]:
        return [self.haproxy.pid] if self.haproxy is not None and self.haproxy.poll() is None \
            else []

    def kill_instance(self, n: int) -> int:
        """SIGKILL peer n and start it again at once on its port (as supervisord would)."""
        proc = self.peers[n - 1]
        if proc is None:
            return 0
        proc.kill()
        proc.wait()
        self.peers[n - 1] = self._spawn_peer(n)
        return proc.pid

    def stop_instances(self) -> None:
        for proc in self.peers:
            if proc is not None:
                _terminate(proc)

    def stop(self) -> None:
        for proc in [self.haproxy, *self.peers, self.own_redis]:
            if proc is not None:
                _terminate(proc)


class NodeTarget(SocketioTarget):
    """N `node bench/peers/node-socketio/server.js` processes and a HAProxy, started by pid here.

    HAProxy pins each client to one process by a cookie, as Socket.IO's docs
    ask (its default transports start with HTTP long-polling); the bench
    clients use the websocket transport, one TCP connection, either way.
    """

    sticky = True

    @classmethod
    def start(cls, instances: int, var: Path, env: dict[str, str],
              redis: RedisRef | None) -> SocketioTarget:
        if shutil.which("node") is None or not (NODE_PEER_DIR / "node_modules").is_dir():
            raise RuntimeError("the Node peer is not installed: run `make node-peer` "
                               "(python -m bench.peers.node_install)")
        return super().start(instances, var, env, redis)

    def peer_command(self, n: int) -> list[str]:
        return ["node", str(NODE_PEER_DIR / "server.js"), "--port", str(self.ports[n - 1]),
                "--redis-url", self.redis.url, "--key", NODE_PEER_KEY, "--name", f"node{n}"]


class NodeUnixTarget(NodeTarget):
    """The Node peer reaching Redis over its Unix socket, as chatfleet's processes
    do on one box: the same code, only node-redis's `socket.path` instead of a URL."""

    def peer_command(self, n: int) -> list[str]:
        if not self.redis.socket:
            raise RuntimeError("this Redis listens on no Unix socket")
        return [*super().peer_command(n), "--redis-socket", self.redis.socket]


def peer_haproxy_config(target: SocketioTarget, sticky: bool = False) -> str:
    """The front for a peer: like chatfleet's; `sticky`: a cookie pins each client to a peer.

    Without stickiness clients must use the websocket transport only, so a
    Socket.IO session lives on one TCP connection and never needs to come
    back to the same process.
    """
    servers = "\n".join(
        f"    server peer{n} 127.0.0.1:{port} check" + (f" cookie peer{n}" if sticky else "")
        for n, port in enumerate(target.ports, start=1))
    cookie = "    cookie peer_server insert indirect nocache httponly\n" if sticky else ""
    return f"""# Rendered by bench/targets.py for one benchmark run.
global
    stats socket {target.var}/peer-haproxy.sock mode 600 level admin
    log stderr format raw local0 warning

defaults
    mode http
    log global
    option dontlognull
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
    timeout http-request 10s
    option redispatch 1
    retries 3

frontend peer_front
    bind 127.0.0.1:{target.http_port}
    option forwardfor
    default_backend peer_instances

backend peer_instances
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz
    http-check expect status 200
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 2
{cookie}{servers}
"""


def haproxy_states(sock: Path, backend: str) -> dict[str, str]:
    """`show stat` over HAProxy's admin socket: each server of `backend` and its state."""
    states = {}
    for row in csv.reader(read_show_stat(sock).lstrip("# ").splitlines()):
        if len(row) > 17 and row[0] == backend and row[1] not in ("FRONTEND", "BACKEND"):
            states[row[1]] = row[17].split(" ")[0]
    return states


def _spawn(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=PROJECT, start_new_session=True)


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port} (pid {proc.pid})")
        time.sleep(POLL_SECONDS)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time (this pid only)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
