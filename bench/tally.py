"""Compare what the drill's clients received with what Redis stored, and print it.

Definitions (per client and room):
- its window starts at the first id it received in the room (or its own first
  acknowledged message there, if that is earlier) and ends at the room's last
  stored id when sending stopped;
- expected: every stored id in the window; lost: expected but never received;
- duplicated: an id received more than once;
- out-of-order: an id smaller than the one received just before it.
Sends: stored = messages of this drill found in the streams (by the cid in
their text); stored twice = a cid stored more than once (idempotence broken);
acked missing = an acknowledged id absent from the stream (an ack that lied).
Private rooms: a member's window starts at the room's first message (members
joined before anything was written); a member removed during the drill
(kicked or banned) has no window there: bench/private.py checks what it got.
Edits and deletes (bench/lifecycle.py): `streams` holds the messages only (the
edit and delete events apart); a deleted message was stored, so it counts as
stored and its ack did not lie, and a client that got it before the delete
did not get something unknown. A `reset` starts the room over for the client:
repeats and order count within the stretches between resets, and its window
starts at the first id after its last reset. With a Redis restarted without
its data (`lost_before`: when that restart ended, monotonic), an ack that
came before it is not expected to be stored.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import lifecycle, private
from bench.chaos import ChaosAction
from bench.drill_client import DrillClient, StreamKey, stream_key
from bench.lifecycle import LifecycleResult
from bench.private import PrivateResult

# How many example ids of each kind of fault the result keeps, for debugging.
SAMPLES = 10


@dataclass
class StoredMessage:
    id: str
    key: StreamKey
    cid: str  # "" for a message not written by this drill
    user: str = ""  # its author
    probe: bool = False  # written by an outsider's try (bench.private): must not be stored


@dataclass
class RoomResult:
    room: str
    clients: int  # clients that were in the room (to the end)
    stored: int  # messages in the stream during the drill
    expected: int
    delivered: int
    lost: int
    duplicated: int
    out_of_order: int


@dataclass
class DrillResult:
    clients: int
    instances: int
    seconds: float
    rate: float
    rooms: list[str]
    private_rooms: list[str] = field(default_factory=list)  # among `rooms`
    sent: int = 0
    acked: int = 0
    unacked: int = 0
    stored: int = 0
    stored_twice: int = 0
    acked_missing: int = 0
    ack_conflicts: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unknown: int = 0  # received ids that are not in the stream at all
    reconnects: int = 0
    reconnect_p50: float = 0.0
    reconnect_p99: float = 0.0
    reconnect_max: float = 0.0
    unfinished_reconnects: int = 0
    relogins: int = 0
    connect_failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    per_room: list[RoomResult] = field(default_factory=list)
    actions: list[ChaosAction] = field(default_factory=list)
    private: PrivateResult | None = None
    lifecycle: LifecycleResult | None = None
    acked_lost_with_data: int = 0  # acked before a Redis restart without its data
    samples: dict[str, list[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    var: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["passed"] = self.passed
        return json.dumps(data, indent=2, sort_keys=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def cid_of(text: str) -> str:
    """The drill writes `"<cid> drill"`; anything else is somebody else's message."""
    head, _, tail = text.partition(" ")
    return head if tail == "drill" else ""


def is_probe(text: str) -> bool:
    """An outsider's try to write to a private room: `"<cid> probe"`."""
    return text.partition(" ")[2] == "probe"


def tally(
    result: DrillResult,
    clients: Iterable[DrillClient],
    streams: dict[str, list[StoredMessage]],
    end_marks: dict[str, StreamKey],
    deleted: dict[str, set[str]] | None = None,
    lost_before: float | None = None,
) -> DrillResult:
    """Fill `result` from the clients' logs and the rooms' streams (`end_marks`: window
    ends; `deleted`: per room, the ids of deleted messages)."""
    clients = list(clients)
    deleted = deleted or {}
    stored_ids = {room: {m.id for m in msgs} | deleted.get(room, set())
                  for room, msgs in streams.items()}
    samples: dict[str, list[str]] = {}

    def sample(kind: str, text: str) -> None:
        bucket = samples.setdefault(kind, [])
        if len(bucket) < SAMPLES:
            bucket.append(text)

    # Sends against storage.
    ours = {cid for c in clients for cid in c.created}
    stored_count: Counter[str] = Counter(
        m.cid for msgs in streams.values() for m in msgs if m.cid in ours
    )
    for c in clients:  # stored, then deleted
        for cid, msg_id in c.acks.items():
            if msg_id in deleted.get(c.created[cid], set()):
                stored_count[cid] += 1
    result.sent = len(ours)
    result.acked = sum(len(c.acks) for c in clients)
    result.unacked = sum(c.unacked for c in clients)
    result.stored = len(stored_count)
    result.stored_twice = sum(1 for n in stored_count.values() if n > 1)
    result.ack_conflicts = sum(c.ack_conflicts for c in clients)
    for c in clients:
        for cid, msg_id in c.acks.items():
            if msg_id not in stored_ids.get(c.created[cid], set()):
                if lost_before is not None and c.ack_at.get(cid, 0.0) <= lost_before:
                    result.acked_lost_with_data += 1
                    continue
                result.acked_missing += 1
                sample("acked_missing", f"{cid} acked as {msg_id}")
        for cid in c.outbox:
            sample("unacked", cid)
    for cid, n in stored_count.items():
        if n > 1:
            sample("stored_twice", f"{cid} x{n}")

    # Deliveries against storage, per room.
    rooms: dict[str, RoomResult] = {
        room: RoomResult(room, 0, _stored_in_window(streams.get(room, []), end_marks.get(room)),
                         0, 0, 0, 0, 0)
        for room in result.rooms
    }
    private_rooms = set(result.private_rooms)
    for c in clients:
        for room, log in c.logs.items():
            stats = rooms[room]
            removed = room in c.removed
            stats.clients += 0 if removed else 1
            ids = log.ids
            got = set(ids)
            stretches = log.stretches()
            dup = sum(len(part) - len(set(part)) for part in stretches)
            ooo = sum(1 for part in stretches for a, b in zip(part, part[1:], strict=False)
                      if stream_key(b) < stream_key(a))
            if dup:
                sample("duplicated", f"{c.user} in {room}: {dup}")
            if ooo:
                sample("out_of_order", f"{c.user} in {room}: {ooo}")
            last = stretches[-1]
            starts = [stream_key(last[0])] if last else []
            if not log.resets:
                starts += [stream_key(mid) for cid, mid in c.acks.items()
                           if c.created[cid] == room]
            result.unknown += len(got - stored_ids.get(room, set()))
            stats.duplicated += dup
            stats.out_of_order += ooo
            if removed:
                continue
            if room in private_rooms and not log.resets:
                starts = [(0, 0)]
            if not starts:
                continue
            start, end = min(starts), end_marks.get(room, (0, 0))
            expected = [m.id for m in streams.get(room, []) if start <= m.key <= end]
            missing = [mid for mid in expected if mid not in got]
            for mid in missing[:2]:
                sample("lost", f"{c.user} in {room}: {mid}")
            stats.expected += len(expected)
            stats.delivered += len(expected) - len(missing)
            stats.lost += len(missing)
    result.per_room = list(rooms.values())
    result.expected = sum(r.expected for r in rooms.values())
    result.delivered = sum(r.delivered for r in rooms.values())
    result.lost = sum(r.lost for r in rooms.values())
    result.duplicated = sum(r.duplicated for r in rooms.values())
    result.out_of_order = sum(r.out_of_order for r in rooms.values())

    # Reconnects.
    times = [t for c in clients for t in c.reconnect_seconds]
    result.reconnects = sum(c.reconnects for c in clients)
    result.reconnect_p50 = percentile(times, 0.50)
    result.reconnect_p99 = percentile(times, 0.99)
    result.reconnect_max = max(times, default=0.0)
    result.unfinished_reconnects = sum(1 for c in clients if c.in_outage)
    result.relogins = sum(c.relogins for c in clients)
    result.connect_failures = sum(c.connect_failures for c in clients)
    errors: Counter[str] = Counter()
    for c in clients:
        errors.update(c.errors)
    result.errors = dict(sorted(errors.items()))
    result.samples = samples

    checks = {
        "lost": result.lost,
        "duplicated": result.duplicated,
        "out-of-order": result.out_of_order,
        "unacked": result.unacked,
        "stored twice": result.stored_twice,
        "acked but not stored": result.acked_missing,
        "cid acked with two ids": result.ack_conflicts,
    }
    result.failures += [f"{name}: {n}" for name, n in checks.items() if n]
    result.failures += [f"chaos: {a.kind} {a.target} failed: {a.note}"
                        for a in result.actions if not a.ok]
    return result


def _stored_in_window(msgs: list[StoredMessage], end: StreamKey | None) -> int:
    return sum(1 for m in msgs if end is None or m.key <= end)


def render(result: DrillResult) -> str:
    """The drill's tables as text."""
    lines = [
        f"failover drill: {result.clients} clients, {result.instances} instances, "
        f"{result.seconds:g} s, {result.rate:g} msg/s, rooms: {', '.join(result.rooms)}",
        "",
        "chaos:",
    ]
    for a in result.actions:
        status = f"UP again after {a.seconds:.1f} s" if a.ok else f"FAILED: {a.note}"
        down = ", HAProxy saw it DOWN" if a.down_seen else ""
        lines.append(f"  {a.at:6.1f} s  {a.kind:<17} {a.target:<8} {status}{down}")
    if not result.actions:
        lines.append("  (none)")
    rows: list[tuple[str, str]] = [
        ("clients", str(result.clients)),
        ("sent", str(result.sent)),
        ("acked", str(result.acked)),
        ("unacked", str(result.unacked)),
        ("stored", str(result.stored)),
        ("stored twice", str(result.stored_twice)),
        ("acked, not stored", str(result.acked_missing)),
        ("delivered (got/expected)", f"{result.delivered} / {result.expected}"),
        ("lost", str(result.lost)),
        ("duplicated", str(result.duplicated)),
        ("out-of-order", str(result.out_of_order)),
        ("not in stream", str(result.unknown)),
        ("reconnects", str(result.reconnects)),
        ("reconnect p50", f"{result.reconnect_p50:.2f} s"),
        ("reconnect p99", f"{result.reconnect_p99:.2f} s"),
        ("reconnect max", f"{result.reconnect_max:.2f} s"),
        ("still reconnecting", str(result.unfinished_reconnects)),
        ("relogins", str(result.relogins)),
        ("failed connect tries", str(result.connect_failures)),
    ]
    if result.acked_lost_with_data:
        rows.insert(rows.index(("acked, not stored", str(result.acked_missing))) + 1,
                    ("acked, lost with Redis's data", str(result.acked_lost_with_data)))
    if result.private is not None:
        rows += private.rows(result.private)
        lines += ["", "private rooms (owner " + result.private.owner + "):"]
        lines += private.removal_lines(result.private) or ["  (no kick or ban)"]
    if result.lifecycle is not None:
        rows += lifecycle.rows(result.lifecycle)
        lines += ["", "resets:"]
        lines += lifecycle.reset_lines(result.lifecycle) or ["  (none)"]
    width = max(len(k) for k, _ in rows)
    lines += ["", f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines += ["", f"{'room':<16} {'clients':>7} {'stored':>7} {'expected':>9} {'got':>9} "
                  f"{'lost':>5} {'dup':>5} {'ooo':>5}"]
    for r in result.per_room:
        lines.append(f"{r.room:<16} {r.clients:>7} {r.stored:>7} {r.expected:>9} "
                     f"{r.delivered:>9} {r.lost:>5} {r.duplicated:>5} {r.out_of_order:>5}")
    if result.errors:
        lines += ["", "closes, error frames, failed tries: "
                  + ", ".join(f"{k} x{v}" for k, v in result.errors.items())]
    for kind, examples in result.samples.items():
        lines.append(f"examples of {kind}: {'; '.join(examples)}")
    for kind, examples in (result.private.samples if result.private else {}).items():
        lines.append(f"examples of {kind}: {'; '.join(examples)}")
    for kind, examples in (result.lifecycle.samples if result.lifecycle else {}).items():
        lines.append(f"examples of {kind}: {'; '.join(examples)}")
    lines += ["", "PASS" if result.passed else "FAIL: " + "; ".join(result.failures)]
    if result.var:
        lines.append(f"stack logs: {result.var}/log")
    return "\n".join(lines)
