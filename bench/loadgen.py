"""Load-generator workers for bench/fanout: many chat clients in one process each.

A worker logs its clients in through HAProxy (each pinned to an instance by
HAProxy's cookie, round-robin), joins each to its room, and then follows
orders from the parent over a pipe: publish at a rate for a while, and
report what every client received. A message carries its send time
(time.monotonic_ns, the same clock in every process of the machine), so each
delivery's latency is measured at the receiver.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from chatclient import HttpSession

CONNECT_BATCH = 50  # clients logged in at once per worker
QUIET_SECONDS = 0.5  # a step's deliveries are over when none came for this long
MARK = '"text":"t='  # chat frames of the benchmark carry "t=<monotonic ns> ..."


@dataclass
class WorkerPlan:
    url: str
    instances: int
    rooms: list[str]
    first_client: int  # global index of this worker's first client
    clients: int
    publishers: int  # how many of this worker's clients publish (round-robin over rooms)


@dataclass
class StepReport:
    received: int = 0
    sent_by_room: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0


class Client:
    def __init__(self, index: int, room: str) -> None:
        self.index = index
        self.room = room
        self.conn: WebSocketClientConnection | None = None
        self.latencies: list[float] = []
        self.received = 0

    async def connect(self, plan: WorkerPlan) -> None:
        http = HttpSession(plan.url)
        http.cookies["chatfleet_server"] = f"chat{1 + self.index % plan.instances}"
        answer = await http.login(f"load{self.index}")
        assert answer.code == 302, answer.code
        url = plan.url.replace("http://", "ws://", 1) + "/ws"
        request = HTTPRequest(url, headers={"Cookie": http.cookie_header(), "Origin": plan.url})
        self.conn = await websocket_connect(request, max_message_size=1 << 20)
        http.close()
        await self._until(lambda f: f.get("type") == "presence" and f.get("room") == "lobby")
        if self.room != "lobby":
            await self.conn.write_message(json.dumps({"type": "join", "room": self.room}))
            await self._until(lambda f: f.get("type") == "presence" and f.get("room") == self.room)

    async def _until(self, match: Any) -> None:
        assert self.conn is not None
        while True:
            raw = await self.conn.read_message()
            if raw is None:
                raise ConnectionError("closed while joining")
            if match(json.loads(raw)):
                return

    async def receive_forever(self) -> None:
        assert self.conn is not None
        while True:
            raw = await self.conn.read_message()
            if raw is None:
                return
            # Find the send time without a JSON parse: the load generator's
            # cost per frame should be as small as we can make it.
            if not isinstance(raw, str):
                continue
            at = raw.find(MARK)
            if at < 0:
                continue
            start = at + len(MARK)
            sent_ns = int(raw[start:raw.index(" ", start)])
            self.latencies.append((time.monotonic_ns() - sent_ns) / 1e6)
            self.received += 1


async def publish(clients: list[Client], rate: float, seconds: float) -> dict[str, int]:
    """Send `rate` messages a second, spread over `clients`, for `seconds`; count per room."""
    by_room: dict[str, int] = {}
    if not clients or rate <= 0:
        return by_room
    interval = 1.0 / rate
    start = time.monotonic()
    sent = 0
    while True:
        due = start + sent * interval
        now = time.monotonic()
        if due - start >= seconds:
            return by_room
        if due > now:
            await asyncio.sleep(due - now)
        client = clients[sent % len(clients)]
        assert client.conn is not None
        text = f"t={time.monotonic_ns()} " + "x" * 40
        client.conn.write_message(json.dumps({"type": "chat", "room": client.room, "text": text}))
        by_room[client.room] = by_room.get(client.room, 0) + 1
        sent += 1


async def quiet(clients: list[Client], limit: float) -> None:
    """Return once no client has received anything for QUIET_SECONDS, or after `limit`."""
    deadline = time.monotonic() + limit
    seen = -1
    while time.monotonic() < deadline:
        total = sum(c.received for c in clients)
        if total == seen:
            return
        seen = total
        await asyncio.sleep(QUIET_SECONDS)


async def serve(plan: WorkerPlan, pipe: Connection) -> None:
    clients = [
        Client(i, plan.rooms[i % len(plan.rooms)])
        for i in range(plan.first_client, plan.first_client + plan.clients)
    ]
    for start in range(0, len(clients), CONNECT_BATCH):
        await asyncio.gather(*(c.connect(plan) for c in clients[start:start + CONNECT_BATCH]))
    readers = [asyncio.create_task(c.receive_forever()) for c in clients]
    publishers = clients[: plan.publishers]
    pipe.send("ready")
    loop = asyncio.get_running_loop()
    while True:
        order = await loop.run_in_executor(None, pipe.recv)
        if order[0] == "stop":
            break
        _, rate, seconds, drain = order
        for c in clients:
            c.latencies, c.received = [], 0
        cpu_before = sum(os.times()[:2])
        step_start = time.monotonic()
        sent_by_room = await publish(publishers, rate, seconds)
        # Listen for the whole step, publishing or not, then until deliveries
        # stop arriving (at most `drain` seconds).
        await asyncio.sleep(max(0.0, step_start + seconds - time.monotonic()))
        await quiet(clients, drain)
        report = StepReport(
            received=sum(c.received for c in clients),
            sent_by_room=sent_by_room,
            latencies_ms=[x for c in clients for x in c.latencies],
            cpu_seconds=sum(os.times()[:2]) - cpu_before,
        )
        pipe.send(report)
    for task in readers:
        task.cancel()
    for c in clients:
        if c.conn is not None:
            c.conn.close()


def worker_main(plan: WorkerPlan, pipe: Connection) -> None:
    try:
        asyncio.run(serve(plan, pipe))
    except Exception as error:  # reported to the parent, which prints it
        pipe.send(f"error: {type(error).__name__}: {error}")
