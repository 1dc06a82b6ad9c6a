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
from pubsub.codec import frame
from redisconn import RedisTarget, Topology
from rooms.moderation import Rooms, RoomSettings
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
    ping_interval: float = 50.0
    ping_every: int = 4
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
    # Users who may do anything a room's owner may, in every room (CHAT_ADMINS).
    admins: frozenset[str] = frozenset()


class ChatProcess:
    """The one object that owns a chat process's state and its stop."""

    def __init__(self, config: Config, topology: Topology) -> None:
        self.config = config
        self.topology = topology
        self.sockets = SocketRegistry(config.limits.max_sockets_per_login)
        self.bus = ChatBus(
            topology, config.instance, Keys(config.key_prefix, sharded=topology.sharded),
            config.caps, config.rate, config.wait_replicas, allowance=config.allowance,
            on_login_ended=self.sockets.end_login, on_room_order=self._on_room_order,
        )
        self.sessions = SessionStore(topology, config.key_prefix, config.session_idle_ttl,
                                     config.max_logins_per_user)
        self.accounts = (Accounts.open(topology, config.key_prefix, config.kdf,
                                       config.password_threads, config.signups_per_hour)
                         if config.auth == "accounts" else None)
        self.rooms = Rooms(topology, self.bus.keys,
                           RoomSettings(config.admins, config.caps.idle_seconds),
                           self.bus.publish_control, self._user_exists,
                           self.bus.admission.count_new_room, self._forget_room)
        # Kicked sockets' room leaves, kept referenced until done.
        self._cutting: set[asyncio.Task[None]] = set()
        self.keepalive = KeepAlive(config.ping_interval, config.ping_every)
        self.wire = WireFrames()  # each fan-out message framed once for all its sockets
        # Set at a planned stop: /healthz answers 503 and new sockets are refused.
        self.draining = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        metrics.gauge("chat_open_sockets", "WebSockets open on this instance",
                      lambda: len(self.sockets))

    @property
    def instance(self) -> str:
        return self.config.instance

    async def _user_exists(self, user: str) -> bool:
        """A user to invite or write to: an account, or in open mode any valid name."""
        return self.accounts is None or await self.accounts.store.exists(user)

    async def _forget_room(self, user: str, room: str) -> None:
        """Take `room` out of the rooms every login of `user` rejoins."""
        for login in await self.sessions.logins_of(user):
            await self.sessions.remove_room(login, room)

    def _on_room_order(self, order: dict[str, object]) -> None:
        """A kick, ban or invitation from some instance: tell this user's sockets
        here; a kicked socket gets nothing more of the room from now on."""
        room, user, by = order.get("room"), order.get("user"), order.get("by")
        if not (isinstance(room, str) and isinstance(user, str)):
            return
        if order.get("t") == "invited":
            invited = frame("invited", room=room, by=by)
            for socket in self.sockets.of_user(user):
                socket.send_frame(invited)
            return
        kicked = frame("kicked", room=room, by=by, ban=bool(order.get("ban")))
        for socket in self.sockets.of_user(user):
            task = self.bus.cut_off(socket, room)  # type: ignore[arg-type]
            if task is not None:
                self._cutting.add(task)
                task.add_done_callback(self._cutting.discard)
            socket.send_frame(kicked)
            if socket.login_id:
                forget = asyncio.create_task(self.sessions.remove_room(socket.login_id, room))
                self._cutting.add(forget)
                forget.add_done_callback(self._cutting.discard)

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
