"""Edits, deletes and resets in the failover drill (issue 17): every view must end as Redis has it.

During the chaos some clients (the editors) edit and delete their own
acknowledged messages (bench.drill_client: `change`, one at a time, resent
after `unavailable` like a chat; the answer is the sender's own `edited` or
`deleted` frame coming back). Every client keeps its epoch per room from
presence and sends it back with `after`, and writes down every `reset`.

Afterwards `check` compares three things with the room's truth in Redis (its
stream: messages and the edit/delete events; its `edits` hash: the latest
texts; a deleted message is absent from the stream):

(a) Redis against what was acknowledged: a message whose delete was answered
    is gone, with every text it ever had (from the stream and the `edits`
    hash); a message that stays reads its last answered edit (or one sent
    after it, whose answer was lost), else its own text or an unanswered
    edit; nothing was edited or deleted that nobody asked for.
(b) every client's final view of every room it follows (chat frames in, then
    `edited` and `deleted` frames applied in the order they came; a `reset`
    empties it) against the truth, over the client's window (bench.tally's:
    from the first id it got after its last reset to the room's last message
    at the end): every stored message there exactly once in its latest text,
    nothing deleted, nothing unknown.
(c) no deleted text reached anybody once the delete was answered: a chat or
    `edited` frame carrying one of the message's texts is a leak when it came
    on a socket after that socket's own `deleted` frame for it, or in answer
    to a join sent (the lobby: a socket opened) after the sender had the
    answer. What a client got before is its right: the view check (b) shows
    it was taken back.
(d) resets: the drill's Redis restart keeps its data (AOF), so any `reset` is
    a failure. With `--lose-data` (Redis restarted empty) every `lost` reset
    after the loss is expected, one is required of every client in every
    room it follows whose epoch it had before the loss, and any other reset
    is a failure.
"""

from __future__ import annotations

import asyncio
import bisect
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.drill_client import (
    DELETE,
    EDIT,
    ChangeOrder,
    DrillClient,
    JoinSent,
    StreamKey,
    stream_key,
)

# Of every this many messages sent, one change is asked for; every third a delete.
CHANGE_EVERY = 6
DELETE_EVERY = 3
# Every this many clients, one edits and deletes (client 0, the private rooms'
# owner, is one).
EDITOR_EVERY = 4
# As each fault begins, this many changes at once, and as many again a moment
# later (while the instance or Redis is down): some are in flight across it.
FAULT_BURST = 6
FAULT_BURST_AGAIN_SECONDS = 0.5
SAMPLES = 10

Sample = Callable[[str, str], None]


@dataclass
class RoomTruth:
    """One room as Redis holds it at the end."""

    room: str
    texts: dict[str, str]  # message id -> its latest text, oldest first
    originals: dict[str, str]  # message id -> its text as sent
    keys: dict[str, StreamKey]
    edits: dict[str, str]  # the room's `edits` hash
    deletes: list[tuple[str, str, str]]  # (event id, target, by) of every delete event
    edit_events: list[tuple[str, str, str]]  # (event id, target, by)

    @property
    def deleted(self) -> set[str]:
        return {target for _, target, _ in self.deletes}


@dataclass
class Loss:
    """A Redis restart without its data (`--lose-data`), in monotonic time."""

    started: float
    ended: float


class Changer:
    """Which editor changes what, as the drill's sender asks: a fixed share of
    the messages, from the editors in turn."""

    def __init__(self, users: Sequence[DrillClient], seed: int | None = None) -> None:
        self.editors = [u for i, u in enumerate(users) if i % EDITOR_EVERY == 0]
        self.rng = random.Random(seed)
        self.asked = 0
        self._turn = 0

    def maybe(self, k: int) -> None:
        """Called for message k: every CHANGE_EVERY-th asks the next editor that can."""
        if k % CHANGE_EVERY == CHANGE_EVERY - 1:
            self._ask(k // CHANGE_EVERY)

    def burst(self) -> None:
        """A fault begins: FAULT_BURST changes now, and as many again a moment later."""
        self._burst()
        asyncio.get_running_loop().call_later(FAULT_BURST_AGAIN_SECONDS, self._burst)

    def _burst(self) -> None:
        for n in range(FAULT_BURST):
            self._ask(n)

    def _ask(self, n: int) -> None:
        """The next editor that can edits (or, for every DELETE_EVERY-th n, deletes)."""
        kind = DELETE if n % DELETE_EVERY == DELETE_EVERY - 1 else EDIT
        for _ in range(len(self.editors)):
            editor = self.editors[self._turn % len(self.editors)]
            self._turn += 1
            if editor.change(kind, self.rng) is not None:
                self.asked += 1
                return


@dataclass
class ResetSeen:
    user: str
    room: str
    reason: str
    at: float  # seconds into the drill
    sock: int


@dataclass
class LifecycleResult:
    edits_asked: int = 0
    edits_acked: int = 0
    deletes_asked: int = 0
    deletes_acked: int = 0
    resent: int = 0  # changes sent more than once
    gone_on_retry: int = 0  # a delete's retry found it gone (an earlier try's answer lost)
    unanswered: int = 0  # changes never answered (Redis decides)
    refused: int = 0  # changes refused for good (bad_frame, forbidden, ...)
    given_up: int = 0  # the editor was removed from the room before an answer
    lost_with_data: int = 0  # refused bad_frame: the message went with Redis's data
    # (a) Redis against the answers.
    edits_lost: int = 0  # a message that stays does not read an edit it should
    deletes_lost: int = 0  # an answered delete whose message is still stored
    unasked: int = 0  # an edit or delete in Redis that no client asked for
    deleted_in_redis: int = 0  # a deleted message's text still in the stream or edits hash
    edited_stored: int = 0  # messages stored with an edit (edited: true)
    deleted_stored: int = 0  # delete events in the streams
    # (b) final views.
    views: int = 0  # (client, room) views compared
    compared: int = 0  # messages compared in them
    view_missing: int = 0
    view_stale: int = 0  # present, but not in its latest text
    view_deleted: int = 0  # a deleted message still shown
    view_unknown: int = 0  # shown, but never stored
    view_lost_with_data: int = 0  # shown, got before Redis lost its data, never reset
    edits_of_unknown: int = 0  # `edited` frames for a message the client did not have
    # (c) deleted texts after the answer.
    deleted_frames: int = 0  # `deleted` frames received
    leaks: int = 0
    # (d) resets.
    lose_data: bool = False
    resets: list[ResetSeen] = field(default_factory=list)
    resets_expected: int = 0  # (client, room) pairs that must get `lost`
    resets_missing: int = 0
    resets_unexpected: int = 0
    resets_unknowable: int = 0  # had messages before the loss but no epoch to send
    samples: dict[str, list[str]] = field(default_factory=dict)

    def reasons(self) -> Counter[str]:
        return Counter(r.reason for r in self.resets)


def check(users: Sequence[DrillClient], truth: dict[str, RoomTruth],
          end_marks: dict[str, StreamKey], t0: float, loss: Loss | None = None
          ) -> tuple[LifecycleResult, list[str]]:
    """(a) to (d) of the module doc: the counts to show and the failures."""
    result = LifecycleResult(lose_data=loss is not None)

    def sample(kind: str, text: str) -> None:
        bucket = result.samples.setdefault(kind, [])
        if len(bucket) < SAMPLES:
            bucket.append(text)

    orders = [(u, c) for u in users for c in u.changes]
    _count_orders(result, orders, loss)
    deletes = _check_redis(result, orders, truth, loss, sample)
    for user in users:
        result.edits_of_unknown += user.edits_of_unknown
        for room in user.rooms:
            if room in truth:
                _check_view(result, user, room, truth[room], end_marks.get(room, (0, 0)),
                            loss, sample)
    _check_leaks(result, users, deletes, sample)
    _check_resets(result, users, t0, loss, sample)

    failures = []
    counts = {
        "edits lost": result.edits_lost,
        "answered deletes not done": result.deletes_lost,
        "changes nobody asked for": result.unasked,
        "deleted text still in Redis": result.deleted_in_redis,
        "changes refused": result.refused,
        "views missing a message": result.view_missing,
        "views with an old text": result.view_stale,
        "views showing a deleted message": result.view_deleted,
        "views showing a message never stored": result.view_unknown,
        "deleted text after the delete's answer": result.leaks,
        "resets without data loss": result.resets_unexpected,
        "resets missing after data loss": result.resets_missing,
    }
    failures += [f"lifecycle: {name}: {n}" for name, n in counts.items() if n]
    if result.edits_asked and not result.edits_acked:
        failures.append("lifecycle: no edit was ever answered")
    if result.deletes_asked and not result.deletes_acked:
        failures.append("lifecycle: no delete was ever answered")
    return result, failures


def _count_orders(result: LifecycleResult, orders: list[tuple[DrillClient, ChangeOrder]],
                  loss: Loss | None) -> None:
    for user, c in orders:
        edit = c.kind == EDIT
        result.edits_asked += edit
        result.deletes_asked += not edit
        if c.acked_at is not None:
            result.edits_acked += edit
            result.deletes_acked += not edit
        result.resent += c.tries > 1
        result.gone_on_retry += c.gone_at is not None
        result.given_up += c.given_up
        if c.acked_at is not None or c.gone_at is not None or c.given_up:
            continue
        if loss is not None and c.refused == "bad_frame" \
                and user.ack_at.get(c.cid, float("inf")) <= loss.ended:
            result.lost_with_data += 1  # its message went with Redis's data
        elif c.refused:
            result.refused += 1
        else:
            result.unanswered += 1


@dataclass
class _Delete:
    room: str
    id: str
    texts: set[str]
    answered_at: float | None  # monotonic: the sender knew it was done (answer, or gone)
    by: str


def _check_redis(result: LifecycleResult, orders: list[tuple[DrillClient, ChangeOrder]],
                 truth: dict[str, RoomTruth], loss: Loss | None, sample: Sample
                 ) -> dict[tuple[str, str], _Delete]:
    """(a); returns the drill's deletes that Redis shows done, by (room, message id)
    (ids are per room: two rooms may hold the same one)."""
    by_message: dict[tuple[str, str], list[ChangeOrder]] = defaultdict(list)
    author: dict[tuple[str, str], DrillClient] = {}
    for user, c in orders:
        by_message[(c.room, c.id)].append(c)
        author[(c.room, c.id)] = user
    deletes: dict[tuple[str, str], _Delete] = {}
    asked_deletes = {key for key, cs in by_message.items()
                     if any(c.kind == DELETE and c.tries for c in cs)}
    asked_texts = {(c.room, c.text) for cs in by_message.values()
                   for c in cs if c.kind == EDIT and c.tries}
    for room, t in truth.items():
        result.edited_stored += len(set(t.edits) & set(t.texts))
        result.deleted_stored += len(t.deletes)
        for _, target, by in t.deletes:
            if (room, target) not in asked_deletes:
                result.unasked += 1
                sample("unasked", f"delete of {target} in {room} by {by}")
        for target, text in t.edits.items():
            if (room, text) not in asked_texts:
                result.unasked += 1
                sample("unasked", f"edit of {target} in {room}: {text!r}")
    deleted = {room: t.deleted for room, t in truth.items()}
    for (room, msg_id), cs in by_message.items():
        if room not in truth:
            continue
        t = truth[room]
        user = author[(room, msg_id)]
        cid = cs[0].cid
        texts = {f"{cid} drill"} | {c.text for c in cs if c.kind == EDIT}
        dels = [c for c in cs if c.kind == DELETE]
        # A loss of Redis's data excuses what was answered before it ended.
        excused = loss is not None and user.ack_at.get(cid, float("inf")) <= loss.ended
        if msg_id in deleted[room]:
            done = [x for c in dels for x in (c.acked_at, c.gone_at) if x is not None]
            deletes[(room, msg_id)] = _Delete(room, msg_id, texts, min(done, default=None),
                                              user.user)
            stored = [x for x in t.texts.values() if x in texts]
            stored += [x for k, x in t.edits.items() if k == msg_id or x in texts]
            if stored:
                result.deleted_in_redis += len(stored)
                sample("deleted text in Redis", f"{msg_id} in {room}")
            continue
        if any(c.acked_at is not None or c.gone_at is not None for c in dels):
            if msg_id in t.texts or not excused:
                result.deletes_lost += 1
                sample("delete lost", f"{user.user}: {msg_id} in {room} "
                                      + ("still stored" if msg_id in t.texts
                                         else "gone without a delete event"))
            continue
        if msg_id not in t.texts:
            continue  # gone with Redis's data (bench.tally counts an ack that lied)
        edits = [c for c in cs if c.kind == EDIT and c.tries]
        acked = [i for i, c in enumerate(edits) if c.acked_at is not None]
        if acked:
            allowed = {e.text for e in edits[acked[-1]:]}
        else:
            allowed = {f"{cid} drill"} | {e.text for e in edits}
        if t.texts[msg_id] not in allowed:
            result.edits_lost += 1
            sample("edit lost", f"{user.user}: {msg_id} in {room} reads {t.texts[msg_id]!r}, "
                                f"expected one of {sorted(allowed)}")
    return deletes


def _window_start(user: DrillClient, room: str) -> StreamKey | None:
    log = user.logs[room]
    stretch = log.stretches()[-1]
    starts = [stream_key(stretch[0])] if stretch else []
    if not log.resets:
        starts += [stream_key(mid) for cid, mid in user.acks.items() if user.created[cid] == room]
    return min(starts) if starts else None


def _check_view(result: LifecycleResult, user: DrillClient, room: str, t: RoomTruth,
                end: StreamKey, loss: Loss | None, sample: Sample) -> None:
    """(b) for one client and room. After a loss of Redis's data, a view that
    was never reset may still show what it got before the loss (it had no
    epoch to be told with: `resets_unknowable`)."""
    start = _window_start(user, room)
    if start is None:
        return
    view = user.views[room]
    before_loss = {s.id for s in user.seen if loss is not None and s.room == room
                   and s.kind == "chat" and s.at < loss.started}
    result.views += 1
    deleted = t.deleted
    for msg_id, text in t.texts.items():
        if not start <= t.keys[msg_id] <= end:
            continue
        result.compared += 1
        shown = view.get(msg_id)
        if shown is None:
            result.view_missing += 1
            sample("view missing", f"{user.user} in {room}: {msg_id}")
        elif shown != text:
            result.view_stale += 1
            sample("view stale", f"{user.user} in {room}: {msg_id} shows {shown!r}, "
                                 f"stored {text!r}")
    for msg_id in view:
        if msg_id in t.texts or not start <= stream_key(msg_id) <= end:
            continue
        if msg_id in deleted:
            result.view_deleted += 1
            sample("view shows deleted", f"{user.user} in {room}: {msg_id}")
        elif msg_id in before_loss:
            result.view_lost_with_data += 1
        else:
            result.view_unknown += 1
            sample("view shows unknown", f"{user.user} in {room}: {msg_id}")


def _check_leaks(result: LifecycleResult, users: Sequence[DrillClient],
                 deletes: dict[tuple[str, str], _Delete], sample: Sample) -> None:
    """(c): frames carrying a deleted text after the delete was answered."""
    by_text = {(d.room, text): d for d in deletes.values() for text in d.texts}
    for user in users:
        # (socket, room, id) -> seq of its first deleted frame there
        deleted_on: dict[tuple[int, str, str], int] = {}
        for s in user.seen:
            if s.kind == "deleted":
                result.deleted_frames += 1
                deleted_on.setdefault((s.sock, s.room, s.id), s.seq)
        joins: dict[tuple[int, str], list[JoinSent]] = defaultdict(list)
        for j in user.joins_sent:
            joins[(j.sock, j.room)].append(j)
        for s in user.seen:
            if s.kind not in ("chat", "edited"):
                continue
            d = deletes.get((s.room, s.id)) or by_text.get((s.room, s.text))
            if d is None:
                continue
            seq = deleted_on.get((s.sock, s.room, d.id))
            after_deleted = seq is not None and seq < s.seq
            join = _join_of(joins.get((s.sock, s.room), []), s.seq)
            after_answer = (d.answered_at is not None and join is not None
                            and join.at > d.answered_at)
            if after_deleted or after_answer:
                result.leaks += 1
                why = "after its deleted frame" if after_deleted else \
                    "in answer to a join sent after the delete's answer"
                sample("deleted text leaked", f"{user.user} in {s.room}: {s.kind} {s.id} "
                                              f"(socket {s.sock}) {why}")


def _join_of(joins: list[JoinSent], seq: int) -> JoinSent | None:
    """The last join sent before frame `seq` (joins are in order of `seq`)."""
    at = bisect.bisect_left([j.seq for j in joins], seq)
    return joins[at - 1] if at else None


def _check_resets(result: LifecycleResult, users: Sequence[DrillClient], t0: float,
                  loss: Loss | None, sample: Sample) -> None:
    """(d)."""
    for user in users:
        got_lost: set[str] = set()
        for s in user.seen:
            if s.kind != "reset":
                continue
            result.resets.append(ResetSeen(user.user, s.room, s.text, s.at - t0, s.sock))
            if loss is not None and s.text == "lost" and s.at >= loss.started:
                got_lost.add(s.room)
            else:
                result.resets_unexpected += 1
                sample("unexpected reset", f"{user.user} in {s.room}: {s.text} at "
                                           f"{s.at - t0:.1f} s")
        if loss is None:
            continue
        for room in user.rooms:
            before = [s for s in user.seen if s.room == room and s.at < loss.started]
            epoch = next((s.text for s in reversed(before) if s.kind == "epoch"), "")
            had = any(s.kind == "chat" for s in before)
            if epoch:
                result.resets_expected += 1
                if room not in got_lost:
                    result.resets_missing += 1
                    sample("reset missing", f"{user.user} in {room} (epoch {epoch})")
            elif had and room not in got_lost:
                result.resets_unknowable += 1


def rows(result: LifecycleResult) -> list[tuple[str, str]]:
    """The edits, deletes and resets lines of the drill's metric table."""
    reasons = result.reasons()
    resets = (f"{len(result.resets)} (lost {reasons.get('lost', 0)}, "
              f"trimmed {reasons.get('trimmed', 0)})")
    lines = [
        ("edits asked / answered", f"{result.edits_asked} / {result.edits_acked}"),
        ("deletes asked / answered", f"{result.deletes_asked} / {result.deletes_acked}"),
        ("changes resent / unanswered",
         f"{result.resent} / {result.unanswered} (gone on retry {result.gone_on_retry})"),
        ("changes refused / given up", f"{result.refused} / {result.given_up}"),
        ("stored edited / delete events", f"{result.edited_stored} / {result.deleted_stored}"),
        ("edits lost / deletes lost", f"{result.edits_lost} / {result.deletes_lost}"),
        ("changes nobody asked for", str(result.unasked)),
        ("deleted text left in Redis", str(result.deleted_in_redis)),
        ("views checked (msgs compared)", f"{result.views} ({result.compared})"),
        ("views: missing / old text", f"{result.view_missing} / {result.view_stale}"),
        ("views: deleted / unknown shown", f"{result.view_deleted} / {result.view_unknown}"),
        ("deleted frames received", str(result.deleted_frames)),
        ("deleted text after answer", str(result.leaks)),
        ("resets", resets),
        ("resets without data loss", str(result.resets_unexpected)),
    ]
    if result.lose_data:
        lines += [
            ("changes on msgs lost with data", str(result.lost_with_data)),
            ("resets lost expected / missing",
             f"{result.resets_expected} / {result.resets_missing}"),
            ("had msgs, no epoch, no reset", str(result.resets_unknowable)),
            ("views: msgs lost with data shown", str(result.view_lost_with_data)),
        ]
    return lines


def reset_lines(result: LifecycleResult) -> list[str]:
    """Each reset seen (room, reason, time), at most SAMPLES of them."""
    lines = [f"  {r.at:6.1f} s  {r.user} in {r.room}: {r.reason} (socket {r.sock})"
             for r in result.resets[:SAMPLES]]
    if len(result.resets) > SAMPLES:
        lines.append(f"  ... and {len(result.resets) - SAMPLES} more")
    return lines
