"""micro: where one chat delivery's microseconds go, step by step, on the real message shape.

    python -m bench.micro
    python -m bench.micro --iterations 20000 --sockets 200 --text-chars 200

Times, in one process on the machine it runs on: the msgpack payload as the
publish script sends it (pack, unpack), the JSON chat frame
(`pubsub.codec.chat_frame`), the WebSocket framing (`internals.wire.wire_frame`,
for a new message and for the next socket of the same message), the
fan-out loop per member without any write (`pubsub.fanout.Fanout`), one
pre-built frame written to each of `--sockets` loopback sockets four ways
(asyncio `transport.write`, raw `socket.send`, Tornado `IOStream.write`,
and `internals.wire.write_now`, the server's own path, then write_now again
over Unix sockets, the way the HAProxy beside the processes reaches them),
and the publish
round trip (the Lua script) to a real redis-server started here. A separate
process reads every loopback socket so the kernel keeps taking data.

A delivery to one socket costs roughly: its share of the per-message steps
(unpack, frame, framing, divided by the members on the process), plus the
fan-out loop and one write per member. The write is most of it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis
from tornado.iostream import IOStream

from internals.wire import WireFrames, wire_frame, write_now
from pubsub.codec import chat_frame, pack, unpack
from pubsub.fanout import Fanout
from pubsub.keys import Keys
from pubsub.publish import Publisher, RateLimit
from redisconn import topology_of
from rigs.ports import free_port

ROOM = "lobby"
USER = "user1234"
MSG_ID = "1700000000000-0"
# Each socket's bytes over a run stay far below a loopback socket buffer's
# size, so no write ever finds the kernel full (a full buffer measures queueing).
MAX_BYTES_PER_SOCKET = 256 * 1024
REDIS_START_SECONDS = 10.0
# Each timing is run this many times and the fastest kept: on a shared
# machine the slower runs measure other processes, not the step.
REPEATS = 3


@dataclass
class Row:
    what: str
    per: str
    us: float
    count: int


def time_op(op: Callable[[], object], count: int) -> float:
    """µs per call of `op`, over `count` calls; the best of REPEATS runs (least disturbed)."""
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter_ns()
        for _ in range(count):
            op()
        best = min(best, (time.perf_counter_ns() - started) / count / 1000)
    return best


def payload(text_chars: int) -> dict[str, object]:
    """The map the publish script packs (pubsub/publish.py, cmsgpack)."""
    return {"t": "chat", "id": MSG_ID, "room": ROOM, "user": USER, "text": "x" * text_chars}


def codec_rows(args: argparse.Namespace) -> list[Row]:
    """Per-message steps: msgpack both ways, the JSON frame, WebSocket framing."""
    message = payload(args.text_chars)
    packed = pack(message)
    text = str(message["text"])
    frame = chat_frame(MSG_ID, ROOM, USER, text)
    n = args.iterations
    # A new str object per call: WireFrames caches by identity (the next socket of a message).
    fresh = [(frame + " ")[:-1] for _ in range(n * REPEATS)]
    it = iter(fresh)
    frames = WireFrames()
    return [
        Row("msgpack pack (payload)", "message", time_op(lambda: pack(message), n), n),
        Row("msgpack unpack (payload)", "message", time_op(lambda: unpack(packed), n), n),
        Row("JSON chat frame (chat_frame)", "message",
            time_op(lambda: chat_frame(MSG_ID, ROOM, USER, text), n), n),
        Row("WebSocket framing, new message (WireFrames.frame)", "message",
            time_op(lambda: frames.frame(next(it)), n), n),
        Row("WebSocket framing, same message again", "socket",
            time_op(lambda: frames.frame(frame), n), n),
    ]


class NullMember:
    """A fan-out member whose write does nothing: isolates the fan-out loop's own cost."""

    def __init__(self, user: str) -> None:
        self.user = user

    def send_frame(self, frame: str) -> None:
        pass

    def busy(self) -> bool:
        return False

    async def drain(self) -> bool:
        return True


def fanout_row(args: argparse.Namespace) -> Row:
    """The fan-out loop per member (decode once, frame once, cursor check, send call)."""
    fanout = Fanout()
    for i in range(args.members):
        member = NullMember(f"u{i}")
        cursor = fanout.add(member, ROOM)
        fanout.finish_replay(member, cursor)
    rounds = max(1, args.iterations // args.members)
    seq = iter(range(1, rounds * REPEATS + 1))

    def deliver() -> None:
        message = payload(args.text_chars)
        message["id"] = f"1700000000000-{next(seq)}"
        fanout.deliver(ROOM, message)

    per_message = time_op(deliver, rounds)
    return Row(f"fan-out loop, no write ({args.members} members)", "socket",
               per_message / args.members, rounds * args.members)


def drain(listener: socket.socket, count: int) -> None:
    """The loopback peer (its own process): accept `count` sockets, read all until each closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    for _ in range(count):
        conn, _ = listener.accept()
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ)
    open_count = count
    while open_count:
        for key, _ in selector.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if not sock.recv(1 << 20):
                selector.unregister(sock)
                sock.close()
                open_count -= 1


@contextmanager
def loopback_sockets(count: int, unix: bool = False) -> Iterator[list[socket.socket]]:
    """`count` connected, non-blocking local sockets whose peer reads everything.

    TCP over loopback, or (`unix`) Unix sockets, the way HAProxy on the same
    host reaches the chat processes.
    """
    folder = Path(tempfile.mkdtemp(prefix="chatfleet-micro-"))
    if unix:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(folder / "peer.sock"))
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
    listener.listen(count)
    peer = multiprocessing.Process(target=drain, args=(listener, count), daemon=True)
    peer.start()
    socks = []
    try:
        for _ in range(count):
            if unix:
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(listener.getsockname())
            else:
                sock = socket.create_connection(listener.getsockname())
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()
        listener.close()
        peer.join(10)
        if peer.is_alive():
            peer.kill()
        shutil.rmtree(folder, ignore_errors=True)


def rounds_for(args: argparse.Namespace, frame: bytes) -> int:
    """Rounds (one write to every socket each) per repeat that fit MAX_BYTES_PER_SOCKET."""
    fits = MAX_BYTES_PER_SOCKET // len(frame) // REPEATS
    return max(1, min(int(args.iterations) // int(args.sockets), fits))


def time_writes(write: Callable[[int], object], sockets: int, rounds: int) -> float:
    """µs per write of `write(i)` for socket i, `rounds` times over all sockets; best repeat."""
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter_ns()
        for _ in range(rounds):
            for i in range(sockets):
                write(i)
        best = min(best, (time.perf_counter_ns() - started) / (rounds * sockets) / 1000)
    return best


async def write_rows(args: argparse.Namespace) -> list[Row]:
    """One pre-built frame written to each loopback socket, four ways."""
    frame = wire_frame(chat_frame(MSG_ID, ROOM, USER, "x" * args.text_chars))
    rounds = rounds_for(args, frame)
    n = args.sockets
    loop = asyncio.get_running_loop()
    rows = []
    with loopback_sockets(n) as socks:
        transports = [(await loop.create_connection(asyncio.Protocol, sock=s))[0] for s in socks]
        us = time_writes(lambda i: transports[i].write(frame), n, rounds)
        rows.append(Row("asyncio transport.write", "socket", us, rounds * n))
        for t in transports:
            t.close()
    with loopback_sockets(n) as socks:
        us = time_writes(lambda i: socks[i].send(frame), n, rounds)
        rows.append(Row("socket.send", "socket", us, rounds * n))
    with loopback_sockets(n) as socks:
        streams = [IOStream(s) for s in socks]
        us = time_writes(lambda i: streams[i].write(frame), n, rounds)
        await asyncio.sleep(0.1)  # let the write futures finish before closing
        rows.append(Row("Tornado IOStream.write", "socket", us, rounds * n))
        for stream in streams:
            stream.close()
    with loopback_sockets(n) as socks:
        streams = [IOStream(s) for s in socks]
        us = time_writes(lambda i: write_now(streams[i], frame), n, rounds)
        rows.append(Row("internals.wire.write_now (the server's)", "socket", us, rounds * n))
        for stream in streams:
            stream.close()
    with loopback_sockets(n, unix=True) as socks:
        streams = [IOStream(s) for s in socks]
        us = time_writes(lambda i: write_now(streams[i], frame), n, rounds)
        rows.append(Row("write_now over a Unix socket (HAProxy beside)", "socket", us,
                        rounds * n))
        for stream in streams:
            stream.close()
    return rows


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a free port (no persistence); stopped by pid after."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make micro installs it)")
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="chatfleet-micro-"))
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + REDIS_START_SECONDS
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


async def publish_row(args: argparse.Namespace, url: str) -> Row:
    """The publish script's round trip, one at a time, with one subscriber on the channel."""
    redis = Redis.from_url(url)
    keys = Keys()
    publisher = Publisher(topology_of(redis), keys, rate=RateLimit(per_window=0))
    listener = redis.pubsub()
    await listener.subscribe(keys.channel(ROOM))  # PUBLISH does its real work: one receiver
    text = "x" * args.text_chars
    count = args.publishes
    await publisher.publish(ROOM, USER, text)  # loads the script
    us = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter_ns()
        for _ in range(count):
            await publisher.publish(ROOM, USER, text)
        us = min(us, (time.perf_counter_ns() - started) / count / 1000)
    await listener.unsubscribe()
    await redis.aclose()
    return Row("publish round trip (Lua: XADD + PUBLISH)", "message", us, count)


async def measure(args: argparse.Namespace) -> list[Row]:
    rows = codec_rows(args)
    rows.append(fanout_row(args))
    rows += await write_rows(args)
    with redis_server() as url:
        rows.append(await publish_row(args, url))
    return rows


def run(args: argparse.Namespace) -> list[Row]:
    """Measure every step; print and return the rows."""
    rows = asyncio.run(measure(args))
    print(f"message text {args.text_chars} chars; wire frame "
          f"{len(wire_frame(chat_frame(MSG_ID, ROOM, USER, 'x' * args.text_chars)))} bytes")
    print(f"{'step':<46} {'per':<8} {'µs':>8} {'timed':>9}  (best of {REPEATS} runs)")
    for row in rows:
        print(f"{row.what:<46} {row.per:<8} {row.us:>8.2f} {row.count:>9}")
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=100_000,
                        help="calls timed per in-memory step (and writes per way, at most)")
    parser.add_argument("--sockets", type=int, default=100, help="loopback sockets written to")
    parser.add_argument("--members", type=int, default=1_000, help="fan-out members")
    parser.add_argument("--publishes", type=int, default=5_000, help="publish round trips timed")
    parser.add_argument("--text-chars", type=int, default=60, help="chat text length")
    return parser.parse_args(argv)


def main() -> None:
    run(parse_args())


if __name__ == "__main__":
    main()
