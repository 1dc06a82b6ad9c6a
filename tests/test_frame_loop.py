"""The WebSocket frame loop that runs a socket's messages itself (internals/frame_loop.py),
on a real Tornado server and client: one task for all of a socket's messages,
handled one at a time and in order; a failing handler closes its socket only.

The loop cuts frames out of whatever one read brings, so raw-socket clients
here also send frames split over many writes, many frames in one write,
fragmented messages with a ping between the fragments, and frames Tornado
refuses: each is taken, or refused, as Tornado's own loop does.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import tornado.web
import tornado.websocket
from tornado.websocket import WebSocketClientConnection, WebSocketProtocol

from internals.frame_loop import with_direct_frames
from rigs.ports import free_port

TIMEOUT = 10.0
MESSAGES = 50


class Recorder(tornado.websocket.WebSocketHandler):
    """Keeps what each message saw: its text, its task, whether another was running."""

    seen: list[tuple[str, asyncio.Task[object] | None, bool]] = []
    running = False
    reads = 0  # reads of the streams, all sockets together
    empty_reads = 0  # recvs of theirs that found nothing (EAGAIN)

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        return with_direct_frames(super().get_websocket_protocol())

    def open(self) -> None:
        stream = self.ws_connection.stream if self.ws_connection is not None else None
        assert stream is not None
        read_bytes = stream.read_bytes

        def counted(*args: Any, **kwargs: Any) -> Any:
            Recorder.reads += 1
            return read_bytes(*args, **kwargs)

        stream.read_bytes = counted  # type: ignore[method-assign]
        read_from_fd = stream.read_from_fd

        def recv(buf: Any) -> int | None:
            got = read_from_fd(buf)
            if got is None:
                Recorder.empty_reads += 1
            return got

        stream.read_from_fd = recv  # type: ignore[method-assign]

    async def on_message(self, message: str | bytes) -> None:
        overlapped = Recorder.running
        Recorder.running = True
        try:
            if message == "bye":
                self.close(1008, "enough")
                return
            await asyncio.sleep(0.001)  # a Redis round trip's worth of waiting
            if message == "boom":
                raise RuntimeError("a handler bug")
            Recorder.seen.append((str(message), asyncio.current_task(), overlapped))
            await self.write_message(f"done {message}")
        finally:
            Recorder.running = False


@asynccontextmanager
async def server(**settings: Any) -> AsyncIterator[str]:
    Recorder.seen, Recorder.reads, Recorder.empty_reads = [], 0, 0
    port = free_port()
    http = tornado.web.Application([(r"/ws", Recorder)], **settings).listen(
        port, address="127.0.0.1")
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        http.stop()


async def replies(client: WebSocketClientConnection, count: int) -> list[str]:
    got = []
    for _ in range(count):
        reply = await asyncio.wait_for(client.read_message(), TIMEOUT)
        assert isinstance(reply, str), f"the socket closed after {got}"
        got.append(reply)
    return got


async def test_one_task_runs_every_message_of_a_socket_in_order() -> None:
    async with server() as url:
        client = await tornado.websocket.websocket_connect(url)
        for n in range(MESSAGES):
            client.write_message(str(n))  # all at once: they queue in the kernel
        assert await replies(client, MESSAGES) == [f"done {n}" for n in range(MESSAGES)]
        client.close()
    texts = [text for text, _, _ in Recorder.seen]
    tasks = {id(task) for _, task, _ in Recorder.seen}
    assert texts == [str(n) for n in range(MESSAGES)]
    assert not any(overlapped for _, _, overlapped in Recorder.seen)
    # Tornado's own protocol makes a task per message: MESSAGES of them.
    assert len(tasks) == 1


async def test_a_failing_handler_closes_its_socket_only() -> None:
    async with server() as url:
        broken = await tornado.websocket.websocket_connect(url)
        fine = await tornado.websocket.websocket_connect(url)
        broken.write_message("boom")
        assert await asyncio.wait_for(broken.read_message(), TIMEOUT) is None  # closed
        fine.write_message("still here")
        assert await replies(fine, 1) == ["done still here"]
        fine.close()


def client_frame(opcode: int, payload: bytes, final: bool = True, rsv: int = 0) -> bytes:
    """One masked client frame, with the length in 7, 16 or 64 bits as its size needs."""
    first = (0x80 if final else 0) | rsv | opcode
    size = len(payload)
    if size < 126:
        header = bytes([first, 0x80 | size])
    elif size < 1 << 16:
        header = bytes([first, 0x80 | 126]) + struct.pack("!H", size)
    else:
        header = bytes([first, 0x80 | 127]) + struct.pack("!Q", size)
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawClient:
    """A WebSocket client on a bare TCP connection: it writes bytes as a test cuts them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url: str) -> RawClient:
        host_port = url.split("//")[1].split("/")[0]
        host, port = host_port.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write((f"GET /ws HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send(self, data: bytes, piece: int = 0) -> None:
        """Write `data` at once, or `piece` bytes per write with a drain between."""
        step = piece or len(data)
        for start in range(0, len(data), step):
            self.writer.write(data[start:start + step])
            await self.writer.drain()
            if piece:
                await asyncio.sleep(0.001)  # each piece a read of its own

    async def frame(self) -> tuple[int, bytes] | None:
        """The server's next frame (opcode, payload), or None once it closed."""
        try:
            first, size = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT)
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return first & 0x0F, await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def texts(self, count: int) -> list[str]:
        got: list[str] = []
        while len(got) < count:
            frame = await self.frame()
            assert frame is not None, f"closed after {got}"
            if frame[0] == 0x1:
                got.append(frame[1].decode())
        return got

    async def closed(self) -> int | None:
        """Wait for the end: the close code the server sent (None: it sent none)."""
        code = None
        while (frame := await self.frame()) is not None:
            if frame[0] == 0x8 and len(frame[1]) >= 2:
                code = struct.unpack("!H", frame[1][:2])[0]
        return code

    def close(self) -> None:
        self.writer.close()


async def test_a_frame_split_over_many_reads_and_frames_sharing_one() -> None:
    """Frames of 7-, 16- and 64-bit lengths, one byte per write, then all of
    them in a single write: the same messages, in order."""
    texts = ["short", "m" * 300, "l" * 70_000]
    frames = b"".join(client_frame(0x1, text.encode()) for text in texts)
    async with server() as url:
        client = await RawClient.connect(url)
        await client.send(frames[:400], piece=1)  # the first two, a byte at a time
        await client.send(frames[400:])
        await client.send(frames)
        assert await client.texts(6) == [f"done {text}" for text in texts * 2]
        client.close()


async def test_frames_sharing_a_read_are_not_read_again() -> None:
    """Tornado reads a frame in three reads of its stream (header, mask,
    payload); here the frames one write brings are cut from one read."""
    async with server() as url:
        client = await RawClient.connect(url)
        await client.send(b"".join(client_frame(0x1, str(n).encode())
                                   for n in range(MESSAGES)))
        assert await client.texts(MESSAGES) == [f"done {n}" for n in range(MESSAGES)]
        assert Recorder.reads < MESSAGES, Recorder.reads
        client.close()


async def test_a_quiet_socket_is_not_read_before_it_is_readable() -> None:
    """A chat socket is mostly quiet: after a read that emptied it, reading
    again at once would find nothing (Tornado does, before every wait)."""
    async with server() as url:
        client = await RawClient.connect(url)
        for n in range(20):  # one frame at a time, each answered before the next
            await client.send(client_frame(0x1, str(n).encode()))
            assert await client.texts(1) == [f"done {n}"]
        assert Recorder.empty_reads <= 2, Recorder.empty_reads
        client.close()


async def test_a_fragmented_message_with_a_ping_between_its_fragments() -> None:
    async with server() as url:
        client = await RawClient.connect(url)
        await client.send(client_frame(0x1, b"hel", final=False)
                          + client_frame(0x9, b"are you there")
                          + client_frame(0x0, b"lo ", final=False))
        await client.send(client_frame(0x0, b"world"), piece=3)
        pong = await client.frame()
        assert pong == (0xA, b"are you there")
        assert await client.texts(1) == ["done hello world"]
        client.close()


async def test_a_message_over_the_limit_is_refused_from_its_header() -> None:
    """1009 as soon as the length is read: the payload is never waited for."""
    async with server(websocket_max_message_size=1024) as url:
        client = await RawClient.connect(url)
        await client.send(client_frame(0x1, b"x" * 2000)[:14])  # the header and a few bytes
        assert await client.closed() == 1009
        # Fragments count together.
        client = await RawClient.connect(url)
        await client.send(client_frame(0x1, b"x" * 800, final=False)
                          + client_frame(0x0, b"x" * 800))
        assert await client.closed() == 1009


async def test_frames_tornado_refuses_end_the_connection() -> None:
    refused = [
        client_frame(0x0, b"nothing to continue"),
        client_frame(0x1, b"an extension", rsv=0x40),
        client_frame(0x9, b"a fragmented ping", final=False),
        client_frame(0x9, b"p" * 126),  # a control frame's payload is under 126
        client_frame(0x1, b"a", final=False) + client_frame(0x1, b"a new message"),
    ]
    async with server() as url:
        for data in refused:
            client = await RawClient.connect(url)
            await client.send(data)
            assert await client.closed() is None, data[:2]
        fine = await RawClient.connect(url)
        await fine.send(client_frame(0x1, b"after them"))
        assert await fine.texts(1) == ["done after them"]
        fine.close()


async def test_after_the_server_closes_no_more_messages_are_handled() -> None:
    """A socket the server closed (for abuse, say) may go on sending until its
    own close: none of it reaches the handler, and its close still ends the
    connection."""
    async with server() as url:
        client = await RawClient.connect(url)
        await client.send(client_frame(0x1, b"bye")
                          + b"".join(client_frame(0x1, b"more") for _ in range(100)))
        first = await client.frame()
        assert first is not None and first[0] == 0x8
        assert struct.unpack("!H", first[1][:2])[0] == 1008
        await client.send(client_frame(0x8, struct.pack("!H", 1000)))
        assert await client.frame() is None  # the server ended the connection
        assert Recorder.seen == []
