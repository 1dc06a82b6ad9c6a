"""The failover drill (issue: survive losing a process).

    python -m bench.failover             # the default drill: 200 clients, 2 instances, 60 s
    python -m bench.failover --clients 50 --seconds 30
    python -m bench.failover --url http://127.0.0.1:8000 --var var   # a stack `make run` started
    python -m bench.failover --private-rooms 0   # without private rooms
    python -m bench.failover --lose-data         # Redis comes back empty: resets expected
    python -m bench.failover --rolling           # an upgrade: each instance restarted in turn

It starts its own stack (supervisord, Redis with AOF, N instances, HAProxy) on
free ports in a temporary folder, logs K scripted users in through HAProxy
(bench.drill_client: they reconnect exactly like static/chat/connection.js), has them
talk at a fixed total rate in a few rooms plus the lobby, and meanwhile
kills instances with SIGKILL one after another, restarts one gracefully
(SIGTERM: drain, close 1012) and restarts Redis once. Then it stops sending,
lets every outbox drain, reads each room's Redis stream and compares it with
what every client received (bench.tally). Exit status 0 only when nothing
was lost, repeated, reordered or left unacknowledged.

`--rolling` is an upgrade instead of chaos: `supervisorctl restart` of one
instance at a time (SIGTERM: drain, close 1012; then the new process), the
next once HAProxy has the last UP again, round and round while the clients
chat; no kill -9, Redis untouched. Every check below holds as for the chaos,
and every instance must have been restarted at least once.

Private rooms (bench.private): client 0 owns a few, some clients are members
and talk there too, some outsiders keep trying to get in, and during the chaos
the owner kicks one member and bans another (kept offline across the ban).
The drill also fails if anybody read a private room it was not allowed to
read at the time, or a member that stayed missed or repeated a message.

Edits and deletes (bench.lifecycle): every fourth client edits and deletes
some of its own messages during the chaos (one change per six messages sent,
every third a delete, and a burst of them as each fault begins and while
Redis is down, kept down 1 s for it: those meet `unavailable` and are resent),
and every client resumes with the room's epoch and
writes down each `reset`. After sending stops and every change is answered,
one last message goes to each room, so a client that has it has every change
before it too. The drill then reads each room's truth from Redis (its stream,
the edit and delete events in it, its `edits` hash) and fails unless every
client's final view of every room it follows equals it, no deleted text
reached anybody after the delete was answered, no deleted text is left in
Redis, and no `reset` came (this Redis restart keeps its data).
`--lose-data` restarts Redis without its files instead (no private rooms
then: their membership goes with the data): every client that had a room's
epoch must then get `reset` `lost` for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import lifecycle, private
from bench.chaos import GRACEFUL, KILL, REDIS, REDIS_EMPTY, Chaos, ChaosAction, attach
from bench.drill_client import LOBBY, DrillClient, StreamKey, stream_key
from bench.lifecycle import Changer, Loss, RoomTruth
from bench.private import DEFAULT_PRIVATE_ROOMS, MAX_PRIVATE_ROOMS, PrivatePlan, Removal
from bench.tally import DrillResult, StoredMessage, cid_of, is_probe, render, tally
from pubsub.keys import Keys
from rigs.ports import settings_on_free_ports
from stack.run import Stack

# The default drill (`make failover`).
DEFAULT_CLIENTS = 200
DEFAULT_INSTANCES = 2
DEFAULT_SECONDS = 60.0
DEFAULT_RATE = 20.0  # messages per second, all clients together
DEFAULT_ROOMS = 4  # besides the lobby
# Time between one fault being healed (HAProxy shows it UP) and the next.
DEFAULT_KILL_INTERVAL = 5.0

# Logging in 200 users at once is a burst no real site sees; start them in
# small groups so the drill measures failover, not the login stampede.
LOGIN_GROUP = 20
LOGIN_GROUP_PAUSE_SECONDS = 0.2
# Every client must be live in its room before the clock starts.
READY_TIMEOUT_SECONDS = 60.0
# After sending stops: the fault in progress finishes (its own waits are
# bounded at about two minutes), every instance comes UP, outboxes drain
# (a client may be in a 10 s backoff), and the last messages arrive.
CHAOS_WRAPUP_SECONDS = 180.0
ALL_UP_TIMEOUT_SECONDS = 60.0
DRAIN_TIMEOUT_SECONDS = 60.0
SETTLE_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
POLL_SECONDS = 0.2
# No drill runs more than this many faults, whatever the interval.
MAX_CHAOS_ACTIONS = 1000
# Stream reads page through a room this many entries at a time.
XRANGE_PAGE = 1000

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- the drill ----------------------------------------------------------------


async def _chaos_loop(
    chaos: Chaos,
    *,
    instances: int,
    seconds: float,
    kill_interval: float,
    redis_restart: bool,
    graceful_restart: bool,
    t0: float,
    sending_over: asyncio.Event,
    log: Log,
    lose_data: bool = False,
    on_fault: Callable[[], None] | None = None,
    rolling: bool = False,
) -> list[ChaosAction]:
    """Until sending stops: wait, do one fault, wait until it is healed, repeat.

    The faults cycle through the instances with kill -9; the second one is a
    graceful restart instead, and the first after half time restarts Redis.
    `rolling`: every fault is a graceful restart, of each instance in turn.
    `on_fault` is called as each fault begins, and again (from the fault's
    thread) while Redis is down during its restart.
    """
    actions: list[ChaosAction] = []
    target = 1
    graceful_due, redis_due = graceful_restart and not rolling, redis_restart and not rolling
    for index in range(MAX_CHAOS_ACTIONS):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sending_over.wait(), kill_interval)
        if sending_over.is_set():
            break
        at = time.monotonic() - t0
        call: Callable[[], ChaosAction]
        if redis_due and at >= seconds / 2:
            redis_due = False
            kind = REDIS_EMPTY if lose_data else REDIS
            call = functools.partial(chaos.restart_redis, at, lose_data,
                                     _from_thread(on_fault) if on_fault else None)
        else:
            n, target = target, target % instances + 1
            if rolling or (graceful_due and index >= 1):
                graceful_due = False
                kind, call = GRACEFUL, functools.partial(chaos.graceful_restart, n, at)
            else:
                kind, call = KILL, functools.partial(chaos.kill, n, at)
        log(f"{at:6.1f} s  chaos: {kind} ...")
        if on_fault is not None:
            on_fault()
        action = await asyncio.to_thread(call)
        actions.append(action)
        outcome = f"UP again after {action.seconds:.1f} s" if action.ok else f"FAILED {action.note}"
        log(f"{time.monotonic() - t0:6.1f} s  chaos: {kind} {action.target}: {outcome}")
    if graceful_due:
        log("note: no graceful restart happened (drill too short for the interval)")
    if redis_due:
        log("note: no Redis restart happened (drill too short for the interval)")
    return actions


def _rolling_failures(actions: list[ChaosAction], instances: int) -> list[str]:
    """A rolling restart proves something only once every instance went through it."""
    done = {a.target for a in actions if a.kind == GRACEFUL and a.ok}
    if len(done) < instances:
        return [f"rolling: only {len(done)} of {instances} instances were restarted "
                "(drill too short for the interval)"]
    return []


def _from_thread(call: Callable[[], None]) -> Callable[[], None]:
    """`call`, run on this event loop when called from another thread."""
    loop = asyncio.get_running_loop()

    def schedule() -> None:
        loop.call_soon_threadsafe(call)

    return schedule


async def _send(clients: list[DrillClient], seconds: float, rate: float, t0: float,
                changer: Changer | None = None) -> None:
    """Fixed total rate: message k goes out at t0 + k/rate, from clients in turn;
    `changer` asks for an edit or delete every so many messages."""
    order = clients[:]
    random.shuffle(order)
    total = int(seconds * rate)
    for k in range(total):
        delay = t0 + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        order[k % len(order)].say()
        if changer is not None:
            changer.maybe(k)


async def _wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_SECONDS)
    return True


async def _last_ids(redis: Redis, keys: Keys, rooms: list[str]) -> dict[str, StreamKey]:
    """Each room's last message id (edit and delete events passed over)."""
    marks: dict[str, StreamKey] = {}
    for room in rooms:
        marks[room] = (0, 0)
        top = "+"
        for _ in range(1_000_000 // XRANGE_PAGE):  # streams are capped far below this
            rows: Any = await redis.xrevrange(keys.stream(room), max=top, count=XRANGE_PAGE)
            found = next((r[0].decode() for r in rows if b"ev" not in r[1]), None)
            if found is not None:
                marks[room] = stream_key(found)
                break
            if len(rows) < XRANGE_PAGE:
                break
            top = f"({rows[-1][0].decode()}"
    return marks


def _text(fields: dict[bytes, bytes], name: bytes) -> str:
    return fields.get(name, b"").decode("utf-8", "replace")


async def _read_streams(
    redis: Redis, keys: Keys, rooms: list[str]
) -> tuple[dict[str, list[StoredMessage]], dict[str, RoomTruth]]:
    """Each room's messages, and its truth: messages in their latest text, the
    edit and delete events, the `edits` hash."""
    streams: dict[str, list[StoredMessage]] = {}
    truths: dict[str, RoomTruth] = {}
    for room in rooms:
        msgs: list[StoredMessage] = []
        raw_edits: Any = await redis.hgetall(keys.edits(room))
        edits = {k.decode(): v.decode("utf-8", "replace") for k, v in raw_edits.items()}
        truth = RoomTruth(room, {}, {}, {}, edits, [], [])
        start = "-"
        for _ in range(1_000_000 // XRANGE_PAGE):  # streams are capped far below this
            rows: Any = await redis.xrange(keys.stream(room), min=start, count=XRANGE_PAGE)
            for raw_id, fields in rows:
                msg_id = raw_id.decode()
                if b"ev" in fields:
                    event = (msg_id, _text(fields, b"target"), _text(fields, b"by"))
                    (truth.deletes if fields[b"ev"] == b"delete" else truth.edit_events
                     ).append(event)
                    continue
                text, user = _text(fields, b"text"), _text(fields, b"user")
                msgs.append(StoredMessage(msg_id, stream_key(msg_id), cid_of(text), user,
                                          is_probe(text)))
                truth.originals[msg_id] = text
                truth.texts[msg_id] = edits.get(msg_id, text)
                truth.keys[msg_id] = stream_key(msg_id)
            if len(rows) < XRANGE_PAGE:
                break
            start = f"({rows[-1][0].decode()}"
        streams[room] = msgs
        truths[room] = truth
    return streams, truths


def _closers(users: list[DrillClient], rooms: list[str]) -> dict[str, DrillClient]:
    """For each room, a client that follows it to the end and writes the last message."""
    closers: dict[str, DrillClient] = {}
    for room in rooms:
        for user in users:
            if room in user.rooms and room not in user.removed:
                closers[room] = user
                break
    return closers


def _drained(users: list[DrillClient]) -> bool:
    return all(u.unacked == 0 and not u.changing and not u.in_outage for u in users)


async def drill(
    stack: Stack,
    redis_url: str,
    *,
    clients: int,
    seconds: float,
    rate: float,
    rooms: int,
    kill_interval: float,
    redis_restart: bool,
    graceful_restart: bool,
    private_rooms: int = DEFAULT_PRIVATE_ROOMS,
    changes: bool = True,
    lose_data: bool = False,
    key_prefix: str = "",
    rolling: bool = False,
    log: Log = _stderr,
) -> DrillResult:
    """Run the drill against a running `stack`; the caller starts and stops it.

    `changes`: editors edit and delete during the chaos (bench.lifecycle);
    `lose_data`: the Redis restart loses every file (no private rooms then);
    `rolling`: a rolling restart (each instance in turn, gracefully) instead."""
    if lose_data:
        private_rooms = 0
    run_id = secrets.token_hex(3)
    public_names = [LOBBY] + [f"drill-{run_id}-{k}" for k in range(1, rooms + 1)]
    private_names = [f"priv-{run_id}-{k}" for k in range(1, private_rooms + 1)]
    room_names = public_names + private_names
    plan = private.plan_private(clients, private_names)
    keys = Keys(key_prefix)
    # Every client loop ends by this time whatever happens.
    deadline = (time.monotonic() + READY_TIMEOUT_SECONDS + seconds + CHAOS_WRAPUP_SECONDS
                + ALL_UP_TIMEOUT_SECONDS + DRAIN_TIMEOUT_SECONDS + SETTLE_TIMEOUT_SECONDS)
    user_names = [f"d{run_id}-{i}" for i in range(clients)]
    removed = plan.removed() if plan else set()
    users = [
        DrillClient(stack.url, user_names[i], public_names[i % len(public_names)], deadline,
                    private=plan.private_of(i) if plan else (),
                    probe=plan.probe_of(i) if plan else (),
                    writes_private=i not in removed, watch=private_names)
        for i in range(clients)
    ]
    result = DrillResult(
        clients=clients, instances=stack.settings.instances, seconds=seconds, rate=rate,
        rooms=room_names, private_rooms=private_names,
    )
    redis = Redis.from_url(redis_url, socket_timeout=10)
    tasks: list[asyncio.Task[None]] = []
    chaos_task: asyncio.Task[list[ChaosAction]] | None = None
    script_task: asyncio.Task[list[Removal]] | None = None
    probe_task: asyncio.Task[None] | None = None
    removals: list[Removal] = []
    t0 = time.monotonic()
    try:
        if plan is not None:
            await private.setup(stack.url, user_names, plan, log)
        log(f"logging in {clients} clients in {len(room_names)} rooms at {stack.url}")
        for i, user in enumerate(users):
            tasks.append(asyncio.create_task(user.run(), name=user.user))
            if i % LOGIN_GROUP == LOGIN_GROUP - 1:
                await asyncio.sleep(LOGIN_GROUP_PAUSE_SECONDS)
        if not await _wait_until(lambda: all(u.ready.is_set() for u in users),
                                 READY_TIMEOUT_SECONDS):
            late = sum(1 for u in users if not u.ready.is_set())
            raise RuntimeError(f"{late} of {clients} clients never got live in their room")

        t0 = time.monotonic()
        log(f"   0.0 s  all live; sending {rate:g} msg/s for {seconds:g} s, faults every "
            f"{kill_interval:g} s")
        sending_over = asyncio.Event()
        changer = Changer(users) if changes else None
        chaos_task = asyncio.create_task(_chaos_loop(
            Chaos(stack), instances=stack.settings.instances, seconds=seconds,
            kill_interval=kill_interval, redis_restart=redis_restart,
            graceful_restart=graceful_restart, t0=t0, sending_over=sending_over, log=log,
            lose_data=lose_data, on_fault=changer.burst if changer is not None else None,
            rolling=rolling,
        ))
        if plan is not None:
            script_task = asyncio.create_task(
                private.script(users, plan, t0, seconds, log, removals))
            probe_task = asyncio.create_task(private.probe_loop(users, plan, sending_over))
        await _send(users, seconds, rate, t0, changer)
        sending_over.set()
        log(f"{time.monotonic() - t0:6.1f} s  sending stopped; waiting for the last fault")
        try:
            result.actions = await asyncio.wait_for(asyncio.shield(chaos_task),
                                                    CHAOS_WRAPUP_SECONDS)
            if rolling:
                result.failures += _rolling_failures(result.actions, stack.settings.instances)
        except TimeoutError:
            result.failures.append("chaos: the last fault did not finish in time")
        if script_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(script_task), private.ORDER_TIMEOUT_SECONDS)
            except TimeoutError:
                result.failures.append("private: the kick and ban did not finish in time")

        names = [f"chat{n}" for n in range(1, stack.settings.instances + 1)]
        try:
            await asyncio.to_thread(stack.wait_servers, "UP", names, ALL_UP_TIMEOUT_SECONDS)
        except TimeoutError as error:
            result.failures.append(f"stack: not every instance came back UP: {error}")
        if not await _wait_until(functools.partial(_drained, users), DRAIN_TIMEOUT_SECONDS):
            log("outboxes did not drain in time")
        # One last message per room, after every change: a client that has it
        # has every edited and deleted frame before it too.
        for room, closer in _closers(users, room_names).items():
            closer.say(room)
        if not await _wait_until(functools.partial(_drained, users), DRAIN_TIMEOUT_SECONDS):
            log("the last messages were not all acknowledged in time")
        marks = await _last_ids(redis, keys, room_names)
        settled = await _wait_until(
            lambda: all(u.has_seen(room, marks[room]) for u in users for room in u.rooms),
            SETTLE_TIMEOUT_SECONDS,
        )
        log(f"{time.monotonic() - t0:6.1f} s  outboxes drained; "
            f"{'every client has the last message' if settled else 'some clients lag'}")
    finally:
        for task in (script_task, probe_task):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for user in users:
            user.stop()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if chaos_task is not None and not chaos_task.done():
            # A fault still running in its thread cannot be interrupted; its
            # own waits are bounded, so wait for it before the stack stops.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(chaos_task, CHAOS_WRAPUP_SECONDS)
    try:
        streams, truths = await _read_streams(redis, keys, room_names)
    finally:
        await redis.aclose()
    loss = _loss(result.actions, t0) if lose_data else None
    tally(result, users, streams, marks, {room: t.deleted for room, t in truths.items()},
          loss.ended if loss is not None else None)
    if plan is not None:
        _check_private(result, plan, users, removals, streams, t0)
    if changes or lose_data:
        checked, failures = lifecycle.check(users, truths, marks, t0, loss)
        result.lifecycle = checked
        result.failures += failures
    return result


def _loss(actions: list[ChaosAction], t0: float) -> Loss | None:
    """When the Redis restart without its data began and ended (monotonic)."""
    for a in actions:
        if a.kind == REDIS_EMPTY:
            return Loss(t0 + a.at, t0 + a.at + a.seconds)
    return None


def _check_private(result: DrillResult, plan: PrivatePlan, users: list[DrillClient],
                   removals: list[Removal], streams: dict[str, list[StoredMessage]],
                   t0: float) -> None:
    authors = {room: [(m.user, m.probe) for m in streams.get(room, [])] for room in plan.rooms}
    checked, failures = private.check(plan, users, removals, authors, t0)
    rows = [r for r in result.per_room if r.room in plan.rooms]
    checked.expected = sum(r.expected for r in rows)
    checked.delivered = sum(r.delivered for r in rows)
    checked.lost = sum(r.lost for r in rows)
    checked.duplicated = sum(r.duplicated for r in rows)
    checked.out_of_order = sum(r.out_of_order for r in rows)
    if not checked.expected:
        failures.append("private: no message of a private room was expected by a member")
    result.private = checked
    result.failures += failures


def run_drill(
    clients: int = DEFAULT_CLIENTS,
    instances: int = DEFAULT_INSTANCES,
    seconds: float = DEFAULT_SECONDS,
    rate: float = DEFAULT_RATE,
    rooms: int = DEFAULT_ROOMS,
    kill_interval: float = DEFAULT_KILL_INTERVAL,
    redis_restart: bool = True,
    graceful_restart: bool = True,
    *,
    private_rooms: int = DEFAULT_PRIVATE_ROOMS,
    changes: bool = True,
    lose_data: bool = False,
    url: str | None = None,
    var: Path | None = None,
    redis_url: str | None = None,
    key_prefix: str = "",
    keep: bool = False,
    rolling: bool = False,
    log: Log = _stderr,
) -> DrillResult:
    """Run one drill and return its result.

    Without `url` it starts its own stack in `var` (default: a new temporary
    folder, removed afterwards unless the drill failed or `keep`) and stops it
    at the end, checking that every process it started is gone. With `url`
    (and `var`, the running stack's state folder) it drives that stack and
    leaves it running.
    """
    if clients < 1 or instances < 2 or seconds <= 0 or rate <= 0 or rooms < 0:
        raise ValueError("need clients >= 1, instances >= 2, seconds > 0, rate > 0, rooms >= 0")
    if not 0 <= private_rooms <= MAX_PRIVATE_ROOMS:
        raise ValueError(f"need 0 <= private rooms <= {MAX_PRIVATE_ROOMS}")
    if rolling and lose_data:
        raise ValueError("--rolling restarts instances only: it cannot lose Redis's data")
    if lose_data and url is not None:
        raise ValueError("--lose-data removes Redis's files: only on the drill's own stack")
    own = url is None
    made_folder = False
    if own:
        if var is None:
            var, made_folder = Path(tempfile.mkdtemp(prefix="chatfleet-failover-")), True
        stack = Stack(settings_on_free_ports(instances, var.resolve()))
        redis_url = stack.settings.effective_redis_url
    else:
        if var is None:
            raise ValueError("--url needs --var: the running stack's state folder")
        redis_url = redis_url or os.environ.get("CHAT_REDIS_URL") or "redis://127.0.0.1:6380/0"
        stack = attach(str(url), var, redis_url)
    folder = stack.settings.var
    result: DrillResult | None = None
    try:
        if own:
            log(f"starting a stack with {instances} instances in {folder}")
            stack.start()
            stack.wait_ready()
        result = asyncio.run(drill(
            stack, redis_url, clients=clients, seconds=seconds, rate=rate, rooms=rooms,
            kill_interval=kill_interval, redis_restart=redis_restart,
            graceful_restart=graceful_restart, private_rooms=private_rooms,
            changes=changes, lose_data=lose_data, key_prefix=key_prefix, rolling=rolling,
            log=log,
        ))
        result.var = str(folder)
    finally:
        if own:
            _stop_own(stack, log)
    if made_folder and result.passed and not keep:
        shutil.rmtree(folder, ignore_errors=True)
        result.var = ""
    return result


def _stop_own(stack: Stack, log: Log) -> None:
    """Stop the stack we started, then make sure every one of its processes is gone."""
    pids = stack.child_pids() if stack.process and stack.process.poll() is None else []
    if stack.process is not None:
        pids.append(stack.process.pid)
    stack.stop()
    left = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            left.append(pid)
        except ProcessLookupError:
            pass
        except PermissionError:  # the pid was reused by someone else's process
            pass
    if left:
        log(f"warning: processes of the drill's stack still running: {left}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.failover",
        description="Failover drill: clients keep chatting while instances and Redis fail.",
    )
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS,
                        help=f"scripted users (default {DEFAULT_CLIENTS})")
    parser.add_argument("--instances", type=int, default=DEFAULT_INSTANCES,
                        help=f"chat processes of the drill's stack (default {DEFAULT_INSTANCES})")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                        help=f"how long the clients send (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help=f"messages per second, all clients together "
                             f"(default {DEFAULT_RATE:g})")
    parser.add_argument("--rooms", type=int, default=DEFAULT_ROOMS,
                        help=f"rooms besides the lobby (default {DEFAULT_ROOMS})")
    parser.add_argument("--private-rooms", type=int, default=DEFAULT_PRIVATE_ROOMS,
                        help=f"private rooms, with a kick and a ban during the chaos "
                             f"(default {DEFAULT_PRIVATE_ROOMS}; 0: none)")
    parser.add_argument("--no-changes", action="store_true",
                        help="no edits and deletes during the chaos")
    parser.add_argument("--lose-data", action="store_true",
                        help="restart Redis without its files (no private rooms then): "
                             "every client that had a room's epoch must get reset lost")
    parser.add_argument("--rolling", action="store_true",
                        help="an upgrade instead of chaos: supervisorctl restart of each "
                             "instance in turn, round and round, while the clients chat")
    parser.add_argument("--kill-interval", type=float, default=DEFAULT_KILL_INTERVAL,
                        help="seconds between a fault being healed and the next "
                             f"(default {DEFAULT_KILL_INTERVAL:g})")
    parser.add_argument("--no-redis-restart", action="store_true",
                        help="do not restart Redis mid-run")
    parser.add_argument("--no-graceful-restart", action="store_true",
                        help="only kill -9, no supervisorctl restart")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    parser.add_argument("--url", help="drive a running stack (e.g. http://127.0.0.1:8000) "
                                      "instead of starting one; needs --var")
    parser.add_argument("--var", type=Path, help="state folder: of the running stack with "
                                                 "--url, else where to put the drill's own")
    parser.add_argument("--redis-url", help="with --url: the stack's Redis "
                                            "(default $CHAT_REDIS_URL or redis://127.0.0.1:6380/0)")
    parser.add_argument("--key-prefix", default=os.environ.get("CHAT_KEY_PREFIX", ""),
                        help="with --url: the stack's Redis key prefix")
    parser.add_argument("--keep", action="store_true",
                        help="keep the drill's own state folder (logs) even when it passes")
    args = parser.parse_args(argv)
    try:
        result = run_drill(
            args.clients, args.instances, args.seconds, args.rate, args.rooms,
            args.kill_interval, not args.no_redis_restart, not args.no_graceful_restart,
            private_rooms=args.private_rooms, changes=not args.no_changes,
            lose_data=args.lose_data, url=args.url, var=args.var,
            redis_url=args.redis_url, key_prefix=args.key_prefix, keep=args.keep,
            rolling=args.rolling,
        )
    except (RuntimeError, TimeoutError, ValueError, OSError) as error:
        print(f"failover drill could not run: {error}", file=sys.stderr)
        return 2
    print(render(result))
    if args.json:
        print(result.to_json())
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
