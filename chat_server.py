"""chatfleet: one Tornado chat process. Run N of them behind HAProxy (see README).

    python chat_server.py --port 8001 --redis-url redis://127.0.0.1:6380/0
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tornado.web
import uvloop
from tornado.netutil import bind_unix_socket
from tornado.options import OptionParser

import internals
import logs
from accounts import AUTH_MODES, KdfParams
from accounts.throttle import SIGNUPS_PER_ADDRESS_HOUR
from handlers import ROUTES
from handlers.edge import MAX_BODY_BYTES, EdgeHeaders, front_door_server, trusted_addresses
from handlers.frames import MAX_TEXT_CHARS
from handlers.limits import SocketLimits
from internals.eventloop import DeferredReadRemovalLoop
from pubsub import Allowance, RateLimit, RoomCaps
from redisconn import RedisTarget, open_topology
from redisconn.connect import DEFAULT_SENTINEL_MASTER
from runtime import ChatProcess, Config
from sessions import DEFAULT_IDLE_TTL_SECONDS
from sessions.store import DEFAULT_MAX_LOGINS_PER_USER

HERE = Path(__file__).resolve().parent
log = logging.getLogger("chatfleet")

# An idle-expired or destroyed session closes its sockets within this long
# (and at once on their next join).
SESSION_CHECK_SECONDS = 120.0

# Keep-alives keep idle proxies between a browser and HAProxy from cutting
# the tunnel (the common idle timeout is 60 s). Every fourth is a ping, which
# finds dead peers: one that answers none of two pings is closed; the rest are
# one-way heartbeats (runtime/keepalive.py). HAProxy's kernel finds most dead
# peers sooner. An idle socket's CPU is its keep-alives, and a pong to read is
# most of a round trip's (README: Performance).
PING_INTERVAL_SECONDS = 50.0
PING_EVERY = 4



# Connections the kernel queues before we accept them. Tornado's default, 128,
# overflows when a dead instance's users all reconnect here at once: the SYNs
# beyond it are dropped and retried after 1, 3, 7 s... (the kernel caps this
# at net.core.somaxconn).
LISTEN_BACKLOG = 4096

def define_options(env: Mapping[str, str]) -> OptionParser:
    """Every flag, its default from `env` where an operator sets it there (README:
    Configuration). A parser of its own: nothing is read at import."""
    parser = OptionParser()
    define = parser.define
    define("port", default=8001, type=int, help="port to listen on")
    define("port_base", default=0, type=int,
           help="with --instance-number: listen on port_base + instance_number (supervisord)")
    define("instance_number", default=0, type=int, help="this process's number among N")
    define("address", default="127.0.0.1", help="address to listen on")
    define("unix_socket_dir", default="",
           help="with --instance-number: also listen on chat-N.sock in this folder, for an "
                "HAProxy on the same host (stack/settings.py names the same file)")
    define("redis_url", default=env.get("CHAT_REDIS_URL", "redis://127.0.0.1:6380/0"),
           help="Redis for sessions, history and fan-out (one server)")
    define("redis_cluster", default=env.get("CHAT_REDIS_CLUSTER", ""),
           help="seed nodes host:port,... of a Redis Cluster (instead of --redis-url)")
    define("redis_sentinels", default=env.get("CHAT_REDIS_SENTINELS", ""),
           help="Sentinels host:port,... watching the primary (instead of --redis-url)")
    define("redis_sentinel_master", default=env.get("CHAT_REDIS_SENTINEL_MASTER",
                                                           DEFAULT_SENTINEL_MASTER),
           help="the primary's name at the Sentinels")
    define("redis_wait_replicas", default=int(env.get("CHAT_REDIS_WAIT_REPLICAS", "0")),
           type=int,
           help="ack a message only once this many replicas hold it (WAIT; not on a Cluster)")
    define("key_prefix", default=env.get("CHAT_KEY_PREFIX", ""),
           help="prefix of every Redis key and channel (two deployments on one Redis)")
    define("cookie_secret_file", default=env.get("CHAT_COOKIE_SECRET_FILE", ""),
           help="file holding the cookie secret when CHAT_COOKIE_SECRET is not set")
    define("session_idle_ttl", default=int(env.get("CHAT_SESSION_TTL",
                                                          DEFAULT_IDLE_TTL_SECONDS)),
           type=int, help="seconds of inactivity before a session ends")
    define("allowed_origins", default=env.get("CHAT_ALLOWED_ORIGINS", ""),
           help="comma-separated extra origins allowed to open /ws (same host is always allowed)")
    define("stream_maxlen", default=int(env.get("CHAT_STREAM_MAXLEN", RoomCaps.max_messages)),
           type=int, help="messages kept per room (trimmed in batches of 100)")
    define("room_max_bytes", default=int(env.get("CHAT_ROOM_MAX_BYTES", RoomCaps.max_bytes)),
           type=int, help="bytes of names and texts kept per room (oldest trimmed first)")
    define("room_idle_days", default=int(env.get("CHAT_ROOM_IDLE_DAYS",
                                                        RoomCaps.idle_seconds // 86400)),
           type=int, help="days without a message or join after which a room's history expires")
    define("rooms_per_day", default=int(env.get("CHAT_ROOMS_PER_DAY",
                                                       Allowance.rooms_per_day)),
           type=int, help="new rooms one user may create per day, over all instances")
    define("max_logins_per_user",
           default=int(env.get("CHAT_MAX_LOGINS_PER_USER", DEFAULT_MAX_LOGINS_PER_USER)),
           type=int, help="sessions one user may hold; a new login past it ends the oldest")
    define("max_text_chars", default=MAX_TEXT_CHARS, type=int, help="longest chat text")
    define("rate_limit", default=int(env.get("CHAT_RATE_LIMIT", RateLimit.per_window)), type=int,
           help="chat messages per user per 10 s, over all instances (0: no limit, for benchmarks)")
    define("rate_burst", default=int(env.get("CHAT_RATE_BURST", RateLimit.burst)), type=int,
           help="messages a user may send at once before the rate applies")
    define("max_rooms_per_socket", default=SocketLimits.max_rooms_per_socket, type=int,
           help="rooms one WebSocket may join")
    define("max_sockets_per_login",
           default=int(env.get("CHAT_MAX_SOCKETS_PER_LOGIN",
                                      SocketLimits.max_sockets_per_login)),
           type=int, help="WebSockets one login (browser session) may hold open on one instance")
    define("slow_consumer_bytes", default=SocketLimits.slow_consumer_bytes, type=int,
           help="unsent bytes after which a socket that stopped reading is cut off")
    define("frames_per_second",
           default=float(env.get("CHAT_FRAMES_PER_SECOND", SocketLimits.frames_per_second)),
           type=float, help="frames a socket may send a second after its burst (past it: "
                            "close 1008); 0: no bound, also when --rate-limit is 0")
    define("frames_burst", default=int(env.get("CHAT_FRAMES_BURST", SocketLimits.frames_burst)),
           type=int, help="frames a socket may send at once before --frames-per-second applies")
    define("max_frame_bytes", default=16 * 1024, type=int,
           help="largest WebSocket frame (close 1009)")
    define("session_check_interval",
           default=float(env.get("CHAT_SESSION_CHECK_SECONDS", SESSION_CHECK_SECONDS)),
           type=float, help="seconds between checks that open sockets' sessions still exist")
    define("ping_interval", default=float(env.get("CHAT_PING_INTERVAL", PING_INTERVAL_SECONDS)),
           type=float,
           help="seconds between keep-alives on an idle socket")
    define("ping_every", default=int(env.get("CHAT_PING_EVERY", PING_EVERY)), type=int,
           help="every Nth keep-alive is a ping (a peer answering none of two is closed); "
                "the others are one-way heartbeats")
    define("drain_wait", default=3.0, type=float,
           help="seconds between /healthz turning 503 and closing sockets "
                "(HAProxy: fall 2 x inter 1s)")
    define("drain_spread", default=3.0, type=float,
           help="seconds over which draining sockets are closed with 1012")
    define("max_body_bytes", default=int(env.get("CHAT_MAX_BODY_BYTES", MAX_BODY_BYTES)),
           type=int, help="largest request body (forms only; larger: 400 before any handler runs)")
    define("auth", default=env.get("CHAT_AUTH", "accounts"),
           help="accounts: a name belongs to whoever signed it up (password); "
                "open: a name is all a login takes (demos, load tools)")
    define("argon2_time_cost", default=int(env.get("CHAT_ARGON2_TIME_COST",
                                                   KdfParams.time_cost)),
           type=int, help="Argon2id passes per password hash (README: Security)")
    define("argon2_memory_kib", default=int(env.get("CHAT_ARGON2_MEMORY_KIB",
                                                    KdfParams.memory_kib)),
           type=int, help="Argon2id memory per password hash, KiB")
    define("password_threads", default=int(env.get("CHAT_PASSWORD_THREADS", "1")), type=int,
           help="threads hashing and checking passwords, off the event loop")
    define("signups_per_hour",
           default=int(env.get("CHAT_SIGNUPS_PER_HOUR", SIGNUPS_PER_ADDRESS_HOUR)), type=int,
           help="new accounts per client address per hour, over all instances (0: no limit)")
    define("admins", default=env.get("CHAT_ADMINS", ""),
           help="comma-separated users who may do anything a room's owner may, in every room")
    define("log_format", default=env.get("CHAT_LOG_FORMAT", "text"),
           help="text: one human-readable line per event; json: one JSON object per line")
    define("log_level", default=env.get("CHAT_LOG_LEVEL", "info"),
           help="debug, info (the access log), warning or error")
    define("trusted_proxies", default=env.get("CHAT_TRUSTED_PROXIES", ""),
           help="comma-separated addresses (a front door over TCP) whose X-Forwarded-For and "
                "X-Forwarded-Proto are believed; the Unix socket's peer always is")
    return parser


def cookie_secret(options: OptionParser, env: Mapping[str, str]) -> str | None:
    """CHAT_COOKIE_SECRET, else the shared secret file the stack made once."""
    secret = env.get("CHAT_COOKIE_SECRET", "").strip()
    if secret:
        return secret
    if options.cookie_secret_file:
        path = Path(options.cookie_secret_file)
        if path.is_file():
            return path.read_text().strip() or None
    return None


def config_from(options: OptionParser, instance: str, secret: str) -> Config:
    """The parsed flags as the process's one configuration."""
    idle_seconds = options.room_idle_days * 86400
    return Config(
        instance=instance,
        cookie_secret=secret,
        redis=RedisTarget(options.redis_url, options.redis_cluster, options.redis_sentinels,
                          options.redis_sentinel_master),
        wait_replicas=options.redis_wait_replicas,
        key_prefix=options.key_prefix,
        session_idle_ttl=options.session_idle_ttl,
        max_logins_per_user=options.max_logins_per_user,
        allowed_origins=frozenset(
            o.strip() for o in options.allowed_origins.split(",") if o.strip()),
        caps=RoomCaps(max_messages=options.stream_maxlen, max_bytes=options.room_max_bytes,
                      idle_seconds=idle_seconds),
        rate=RateLimit(per_window=options.rate_limit, burst=options.rate_burst),
        allowance=Allowance(rooms_per_day=options.rooms_per_day,
                            room_idle_seconds=idle_seconds),
        limits=SocketLimits(
            max_text_chars=options.max_text_chars,
            max_rooms_per_socket=options.max_rooms_per_socket,
            max_sockets_per_login=options.max_sockets_per_login,
            slow_consumer_bytes=options.slow_consumer_bytes,
            # A stack without the chat rate limit (load tools, throughput tests)
            # is driven faster than people type: no frame bound either.
            frames_per_second=options.frames_per_second if options.rate_limit else 0.0,
            frames_burst=options.frames_burst,
        ),
        session_check_interval=options.session_check_interval,
        ping_interval=options.ping_interval,
        ping_every=options.ping_every,
        drain_wait=options.drain_wait,
        drain_spread=options.drain_spread,
        auth=options.auth,
        kdf=KdfParams(time_cost=options.argon2_time_cost, memory_kib=options.argon2_memory_kib),
        password_threads=max(1, options.password_threads),
        signups_per_hour=options.signups_per_hour,
        admins=frozenset(name.strip() for name in options.admins.split(",") if name.strip()),
    )


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Access log without the health checks HAProxy sends every second."""
    if handler.request.path == "/healthz" and handler.get_status() == 200:
        return
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    # Method and path only: never the query, a header or a body (README: Security).
    method, path = handler.request.method, handler.request.path
    ms = round(1000.0 * handler.request.request_time(), 1)
    logging.getLogger("tornado.access").log(
        level, "%d %s %s %.1fms", status, method, path, ms,
        extra={"status": status, "method": method, "path": path, "ms": ms},
    )


def make_app(process: ChatProcess, max_frame_bytes: int,
             **overrides: Any) -> tornado.web.Application:
    settings: dict[str, Any] = {
        "process": process,
        "session_store": process.sessions,  # for sessions.SessionMixin
        "accounts_only": process.accounts is not None,  # sessions.SessionMixin.session_user
        "cookie_secret": process.config.cookie_secret,
        "xsrf_cookies": True,
        "xsrf_cookie_kwargs": {"samesite": "Lax", "path": "/"},
        "template_path": str(HERE / "templates"),
        "static_path": str(HERE / "static"),
        "websocket_max_message_size": max_frame_bytes,
        # One keep-alive timer for all sockets (runtime/keepalive.py) instead
        # of Tornado's per-socket pings.
        "websocket_ping_interval": 0,
        "log_function": _log_request,
    }
    settings.update(overrides)
    app = tornado.web.Application(ROUTES, **settings)
    app.add_transform(EdgeHeaders)  # security headers on every answer; no Server header
    return app


# The garbage collector, tuned for a process holding thousands of sockets for
# hours: with the default young threshold (700) a handshake's short-lived
# objects got promoted and set off full collections of the whole heap; a
# larger young generation lets them die young (README: Performance, idle).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    gc.freeze()  # what startup built (modules, the app) lives forever: never scan it again
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def main(argv: list[str], env: Mapping[str, str]) -> None:
    internals.check()  # a Tornado without what internals/ relies on stops here, loudly
    # Before anything asks for IOLoop.current(): this one becomes it.
    DeferredReadRemovalLoop()
    options = define_options(env)
    options.parse_command_line(argv)
    if options.auth not in AUTH_MODES:
        sys.exit(f"chat_server: --auth must be one of {', '.join(AUTH_MODES)}")
    secret = cookie_secret(options, env)
    if not secret:
        sys.exit("chat_server: no cookie secret: set CHAT_COOKIE_SECRET or --cookie-secret-file")
    port = options.port_base + options.instance_number if options.port_base else options.port
    config = config_from(options, f"{socket.gethostname()}:{port}", secret)
    try:
        logs.configure(options.log_format, level=options.log_level, instance=config.instance)
    except ValueError as error:
        sys.exit(f"chat_server: {error}")
    process = ChatProcess(config, open_topology(config.redis))
    app = make_app(process, options.max_frame_bytes)
    tune_gc()

    await process.start()
    server = front_door_server(app, trusted_addresses(options.trusted_proxies),
                               options.max_body_bytes)
    server.listen(port, options.address, backlog=LISTEN_BACKLOG)
    if options.unix_socket_dir and options.instance_number:
        # HAProxy on this host talks to us here, cheaper than loopback TCP
        # (README: Running N processes).
        path = os.path.join(options.unix_socket_dir, f"chat-{options.instance_number}.sock")
        server.add_socket(bind_unix_socket(path, mode=0o600, backlog=LISTEN_BACKLOG))
    log.info("instance %s listening on %s:%d, Redis: %s", config.instance, options.address,
             port, config.redis.describe())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await process.drain(server.stop)


if __name__ == "__main__":
    # libuv's event loop: the loop's own work per message (callbacks, timers,
    # transports) in C; README: Performance has the before and after.
    uvloop.run(main(sys.argv, os.environ))
