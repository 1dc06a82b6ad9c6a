"""One chat process's life: its configuration, Redis, bus, sessions, sockets,
keep-alive, session watcher and drain, owned by one object.

`chat_server.main()` parses the configuration once, builds a `ChatProcess`
and hands it to the handlers (application setting `process`); nothing else
in the product keeps process-wide state, except metric definitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import metrics
from accounts import Accounts, KdfParams
from accounts.throttle import SIGNUPS_PER_ADDRESS_HOUR
from handlers.limits import SocketLimits
from internals.wire import WireFrames
from pubsub import Allowance, ChatBus, Keys, RateLimit, RoomCaps
from redisconn import RedisTarget, Topology
from runtime.keepalive import KeepAlive
from runtime.sockets import SocketRegistry
from sessions import DEFAULT_IDLE_TTL_SECONDS, SessionStore
from sessions.store import DEFAULT_MAX_LOGINS_PER_USER

log = logging.getLogger(__name__)

# A planned stop (SIGTERM) ends within this long, whatever hangs: supervisord
# kills a process still running after its stopwaitsecs (15 s,
# supervisord.conf), and a kill would drop the sockets without their 1012.
DRAIN_BUDGET_SECONDS = 12.0
# Of the budget, what each later step keeps for itself when an earlier one
# is slow: closing the sockets, their room leaves, stopping the bus.
CLOSE_RESERVE_SECONDS = 6.0
LEAVE_RESERVE_SECONDS = 4.0
STOP_RESERVE_SECONDS = 2.0
# Room leaves of closed sockets get at most this long before the bus stops.
LEAVE_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Config:
    """Everything a chat process is told, parsed once (chat_server.py: options)."""

    instance: str
    cookie_secret: str
    redis: RedisTarget = field(default_factory=RedisTarget)
    wait_replicas: int = 0
    key_prefix: str = ""
    session_idle_ttl: int = DEFAULT_IDLE_TTL_SECONDS
    max_logins_per_user: int = DEFAULT_MAX_LOGINS_PER_USER
    allowed_origins: frozenset[str] = frozenset()
    caps: RoomCaps = field(default_factory=RoomCaps)
    rate: RateLimit = field(default_factory=RateLimit)
    allowance: Allowance = field(default_factory=Allowance)
    limits: SocketLimits = field(default_factory=SocketLimits)
    session_check_interval: float = 120.0
    ping_interval: float = 25.0
    # Between /healthz turning 503 and the first 1012 (HAProxy: fall 2 x inter 1s).
    drain_wait: float = 3.0
    # Over how long the sockets are closed with 1012.
    drain_spread: float = 3.0
    # "accounts" (a name needs its password) or "open" (a name is all a login takes).
    auth: str = "accounts"
    kdf: KdfParams = field(default_factory=KdfParams)
    # Threads for password hashing and checks (each takes at most one core).
    password_threads: int = 1
    # New accounts per client address per hour (0: not counted).
    signups_per_hour: int = SIGNUPS_PER_ADDRESS_HOUR


class ChatProcess:
    """The one object that owns a chat process's state and its stop."""

    def __init__(self, config: Config, topology: Topology) -> None:
        self.config = config
        self.topology = topology
        self.sockets = SocketRegistry(config.limits.max_sockets_per_login)
        self.bus = ChatBus(
            topology, config.instance, Keys(config.key_prefix, sharded=topology.sharded),
            config.caps, config.rate, config.wait_replicas, allowance=config.allowance,
            on_login_ended=self.sockets.end_login,
        )
        self.sessions = SessionStore(topology, config.key_prefix, config.session_idle_ttl,
                                     config.max_logins_per_user)
        self.accounts = (Accounts.open(topology, config.key_prefix, config.kdf,
                                       config.password_threads, config.signups_per_hour)
                         if config.auth == "accounts" else None)
        self.keepalive = KeepAlive(config.ping_interval)
        self.wire = WireFrames()  # each fan-out message framed once for all its sockets
        # Set at a planned stop: /healthz answers 503 and new sockets are refused.
        self.draining = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        metrics.gauge("chat_open_sockets", "WebSockets open on this instance",
                      lambda: len(self.sockets))

    @property
    def instance(self) -> str:
        return self.config.instance

    async def start(self) -> None:
        await self.bus.start()
        if self.accounts is not None:
            await self.accounts.start()
        self._tasks = [
            asyncio.create_task(
                self.sockets.watch_sessions(self.sessions, self.config.session_check_interval),
                name="session-watcher"),
            asyncio.create_task(self.keepalive.run(), name="keepalive"),
        ]

    async def drain(self, stop_listening: Callable[[], None],
                    budget: float = DRAIN_BUDGET_SECONDS) -> None:
        """A planned stop, within `budget` seconds whatever hangs: fail health
        checks so HAProxy sends nobody new, hand the sockets back spread out
        (1012), let them leave their rooms, stop the bus, close Redis."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget

        def left(reserve: float = 0.0) -> float:
            return max(0.0, deadline - reserve - loop.time())

        log.info("draining: /healthz is 503 now")
        self.draining.set()
        await asyncio.sleep(min(self.config.drain_wait, left(CLOSE_RESERVE_SECONDS)))
        spread = min(self.config.drain_spread, left(LEAVE_RESERVE_SECONDS))
        await self.sockets.close_all(loop.time() + spread)
        await self.sockets.wait_left(loop.time() + min(LEAVE_WAIT_SECONDS,
                                                       left(STOP_RESERVE_SECONDS)))
        stop_listening()
        for task in self._tasks:
            task.cancel()
        await self.bus.stop(timeout=left(STOP_RESERVE_SECONDS / 2))
        if self.accounts is not None:
            self.accounts.stop()
        try:
            await asyncio.wait_for(self.topology.aclose(), max(0.1, left()))
        except TimeoutError:
            log.error("Redis connections did not close before the drain's deadline")
        log.info("instance %s stopped", self.instance)
