"""The chat processes' IOLoop (internals/eventloop.py) on a real socket pair.

A frame read in two parts, or a stream that pauses between frames, must not
unregister and re-register its socket; a stream that stops reading must
lose its READ interest as soon as the socket turns readable, and read
nothing more (or a peer could fill the process's memory past backpressure).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager

from tornado.iostream import IOStream

from internals.eventloop import DeferredReadRemovalLoop

TIMEOUT = 10.0
STREAMS = 20
FRAMES = 10


def run_on_loop(scenario: Callable[[DeferredReadRemovalLoop], Awaitable[None]]) -> None:
    """Run `scenario` on a fresh asyncio loop whose Tornado IOLoop is ours."""
    asyncio_loop = asyncio.new_event_loop()
    made: list[DeferredReadRemovalLoop] = []

    async def main() -> None:
        made.append(DeferredReadRemovalLoop())
        await asyncio.wait_for(scenario(made[0]), TIMEOUT)

    try:
        asyncio_loop.run_until_complete(main())
    finally:
        if made:
            made[0].close()  # closes the asyncio loop too
        else:
            asyncio_loop.close()


def count_reader_changes(io_loop: DeferredReadRemovalLoop) -> dict[str, int]:
    """Count the add_reader/remove_reader calls the IOLoop makes on asyncio."""
    counts = {"add": 0, "remove": 0}
    selector = io_loop.selector_loop
    add, remove = selector.add_reader, selector.remove_reader

    def counting_add(*args: object) -> None:
        counts["add"] += 1
        add(*args)

    def counting_remove(fd: int) -> bool:
        counts["remove"] += 1
        return remove(fd)

    selector.add_reader = counting_add  # type: ignore[method-assign]
    selector.remove_reader = counting_remove  # type: ignore[method-assign]
    return counts


@contextmanager
def stream_pair() -> Iterator[tuple[socket.socket, IOStream]]:
    """A connected socket pair: the peer's end, and ours as an IOStream; both closed after."""
    peer, ours = socket.socketpair()
    stream = IOStream(ours)
    try:
        yield peer, stream
    finally:
        stream.close()
        peer.close()


async def next_turns(turns: int = 3) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


def test_frames_read_in_parts_keep_their_registrations() -> None:
    """Many sockets' frames arrive in one loop turn, as pongs do on a busy process."""

    async def scenario(io_loop: DeferredReadRemovalLoop) -> None:
        async def read_frames(stream: IOStream) -> None:
            # Like Tornado's frame loop: header, then mask (and payload), again and again.
            for n in range(FRAMES):
                assert await stream.read_bytes(2) == b"\x8a\x80"
                assert await stream.read_bytes(4) == bytes([n]) * 4

        with ExitStack() as pairs_closed:
            pairs = [pairs_closed.enter_context(stream_pair()) for _ in range(STREAMS)]
            readers = [asyncio.ensure_future(read_frames(stream)) for _, stream in pairs]
            await next_turns()
            counts = count_reader_changes(io_loop)
            for n in range(FRAMES):
                for peer, _ in pairs:
                    peer.sendall(b"\x8a\x80" + bytes([n]) * 4)  # a masked pong: 2 + 4 bytes
                await next_turns()
            await asyncio.gather(*readers)
            await next_turns()
            # The readers returned without asking for more, and the sockets stayed
            # quiet: still registered, never re-registered.
            assert counts == {"add": 0, "remove": 0}
            assert all(stream.socket.fileno() in io_loop.readers for _, stream in pairs)

    run_on_loop(scenario)


def test_a_stream_that_stops_reading_is_unregistered() -> None:
    async def scenario(io_loop: DeferredReadRemovalLoop) -> None:
        with stream_pair() as (peer, stream):
            peer.sendall(b"abcdef")
            assert await stream.read_bytes(2) == b"ab"
            await next_turns()
            # Four bytes wait unread and nobody reads; more arrive: READ is dropped
            # then, as Tornado would have dropped it, and nothing more is read.
            peer.setblocking(False)
            sent = peer.send(b"ghij" * 16_384)  # as much as the kernel takes
            assert sent > 4
            await next_turns()
            assert stream.socket.fileno() not in io_loop.readers
            assert stream._read_buffer_size == 4  # the new bytes stayed in the kernel
            assert await stream.read_bytes(8) == b"cdefghij"

    run_on_loop(scenario)


def test_a_closed_stream_leaves_nothing_registered() -> None:
    async def scenario(io_loop: DeferredReadRemovalLoop) -> None:
        with stream_pair() as (peer, stream):
            fd = stream.socket.fileno()
            peer.sendall(b"abcdef")
            assert await stream.read_bytes(2) == b"ab"
            stream.close()  # within the same turn as the deferred removal
            await next_turns()
            assert fd not in io_loop.readers and fd not in io_loop.handlers

    run_on_loop(scenario)
