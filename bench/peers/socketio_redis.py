"""The benchmark's chat written the usual python-socketio way: one aiohttp process per port.

    python -m bench.peers.socketio_redis --port 9001 --redis-url redis://127.0.0.1:6380/0

Run several behind HAProxy; `socketio.AsyncRedisManager` relays every emit
through Redis pub/sub so each process delivers to its own clients. The same
features as chatfleet's fan-out path and nothing more:

- login: the user name in the Socket.IO connect auth (`{"user": NAME}`) or the
  query string (`?user=NAME`); the same 1-32 name rule as chatfleet. There is
  no password and no session store: a peer for measuring fan-out, not a product.
- `join` {room}: enters the room, acknowledges with {room, instance}, and tells the
  room `joined` {room, user} (as chatfleet does).
- `chat` {room, text}: a member's text (at most 4,000 characters) is emitted
  to the whole room, on every process, as `chat` {room, user, text, ts}.

Only the websocket transport is served, so a client's Socket.IO session lives
on one TCP connection and HAProxy needs no stickiness. Compression is off
like chatfleet's: no HTTP compression, and aiohttp only deflates WebSocket
frames for clients that ask for permessage-deflate (the bench client never does).
"""

from __future__ import annotations

import argparse
import re
import time
import urllib.parse
from typing import Any

import socketio
from aiohttp import web

NAME = re.compile(r"[A-Za-z0-9._-]{1,32}")
MAX_TEXT_CHARS = 4000  # chatfleet's limit (handlers/frames.py)


def user_of(environ: dict[str, Any], auth: Any) -> str | None:
    """The login name from the connect auth, else from the query string."""
    name = auth.get("user") if isinstance(auth, dict) else None
    if name is None:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        name = (query.get("user") or [None])[0]
    return name if isinstance(name, str) and NAME.fullmatch(name) else None


def make_server(redis_url: str, channel: str, name: str) -> socketio.AsyncServer:
    manager = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(
        async_mode="aiohttp", client_manager=manager, transports=["websocket"],
        http_compression=False, logger=False, engineio_logger=False,
    )

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        user = user_of(environ, auth)
        if user is None:
            raise socketio.exceptions.ConnectionRefusedError("bad_user")
        await sio.save_session(sid, {"user": user})

    async def join(sid: str, data: Any) -> dict[str, str] | None:
        """Enter a room; the acknowledgement names this process (tests check the spread)."""
        room = data.get("room") if isinstance(data, dict) else None
        if not isinstance(room, str) or not NAME.fullmatch(room):
            return None
        user = (await sio.get_session(sid))["user"]
        await sio.enter_room(sid, room)
        await sio.emit("joined", {"room": room, "user": user}, room=room, skip_sid=sid)
        return {"room": room, "instance": name}

    async def chat(sid: str, data: Any) -> None:
        if not isinstance(data, dict):
            return
        room, text = data.get("room"), data.get("text")
        if not isinstance(room, str) or room not in sio.rooms(sid):
            return
        if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
            return
        user = (await sio.get_session(sid))["user"]
        await sio.emit("chat", {"room": room, "user": user, "text": text, "ts": time.time()},
                       room=room)

    for handler in (connect, join, chat):
        sio.on(handler.__name__, handler)
    return sio


async def healthz(request: web.Request) -> web.Response:
    """HAProxy's check: this process serves."""
    return web.Response(text="ok")


def make_app(redis_url: str, channel: str, name: str) -> web.Application:
    app = web.Application()
    make_server(redis_url, channel, name).attach(app)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--channel", default="bench-socketio",
                        help="Redis pub/sub channel (keep it apart from other apps)")
    parser.add_argument("--name", default="peer", help="this process's name (log, join ack)")
    args = parser.parse_args()
    print(f"{args.name} listening on {args.address}:{args.port}", flush=True)
    app = make_app(args.redis_url, args.channel, args.name)
    web.run_app(app, host=args.address, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
