"""The WebSocket frame loop that runs a socket's messages itself (internals/frame_loop.py),
on a real Tornado server and client: one task for all of a socket's messages,
handled one at a time and in order; a failing handler closes its socket only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        return with_direct_frames(super().get_websocket_protocol())

    async def on_message(self, message: str | bytes) -> None:
        overlapped = Recorder.running
        Recorder.running = True
        try:
            await asyncio.sleep(0.001)  # a Redis round trip's worth of waiting
            if message == "boom":
                raise RuntimeError("a handler bug")
            Recorder.seen.append((str(message), asyncio.current_task(), overlapped))
            await self.write_message(f"done {message}")
        finally:
            Recorder.running = False


@asynccontextmanager
async def server() -> AsyncIterator[str]:
    Recorder.seen = []
    port = free_port()
    http = tornado.web.Application([(r"/ws", Recorder)]).listen(port, address="127.0.0.1")
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
