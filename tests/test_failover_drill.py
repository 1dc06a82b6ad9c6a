"""The short failover drill against a stack of its own: kill -9, graceful restart, Redis restart,
private rooms with a kick and a ban, and edits and deletes during it.

It starts its own supervisord (not the session `stack` fixture): killing and
restarting processes would disturb every other test using that one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench import lifecycle
from bench.chaos import GRACEFUL, ChaosAction
from bench.drill_client import (
    DELETE,
    EDIT,
    ChangeOrder,
    DrillClient,
    JoinSent,
    RoomEvent,
    Seen,
    SocketLog,
    stream_key,
)
from bench.failover import _chaos_loop, _rolling_failures, run_drill
from bench.lifecycle import Loss, RoomTruth
from bench.private import MAX_INVITES, PrivatePlan, Removal, check, plan_private
from bench.tally import DrillResult, StoredMessage, render, tally


@pytest.mark.cluster
def test_short_failover_drill(tmp_path: Path) -> None:
    result = run_drill(
        clients=20,
        instances=2,
        seconds=20,
        rate=10,
        rooms=4,
        kill_interval=2,
        var=tmp_path / "stack",
        log=lambda line: print(line, flush=True),
    )
    print(render(result))
    # The drill only proves something if the faults really cut connections.
    assert result.reconnects >= 1
    assert {a.kind for a in result.actions} >= {"kill -9", "graceful restart"}
    assert all(a.ok for a in result.actions), result.actions
    assert result.lost == 0, result.samples
    assert result.duplicated == 0, result.samples
    assert result.out_of_order == 0, result.samples
    assert result.unacked == 0, result.samples
    assert result.stored_twice == 0 and result.acked_missing == 0, result.samples
    assert result.sent == result.acked == result.stored > 0
    assert result.delivered == result.expected > 0
    # Private rooms: nobody read what it was not allowed to, members lost nothing.
    private = result.private
    assert private is not None
    assert [r.action for r in private.removals] == ["kick", "ban"]
    assert all(r.answered_at is not None for r in private.removals), private.removals
    assert private.outsider_frames == private.removed_after == 0, private.samples
    assert private.admitted == private.outsider_stored == 0, private.samples
    assert private.members_refused == 0, private.samples
    assert private.probes > 0 and private.refused > 0
    assert private.delivered == private.expected > 0
    assert private.lost == private.duplicated == private.out_of_order == 0
    # Edits and deletes: answered, done in Redis, and every view ends as Redis has it.
    changes = result.lifecycle
    assert changes is not None
    assert changes.edits_acked > 0 and changes.deletes_acked > 0, changes
    assert changes.edits_lost == changes.deletes_lost == changes.unasked == 0, changes.samples
    assert changes.deleted_in_redis == changes.refused == 0, changes.samples
    assert changes.views > 0 and changes.compared == result.expected
    assert changes.view_missing == changes.view_stale == 0, changes.samples
    assert changes.view_deleted == changes.view_unknown == 0, changes.samples
    assert changes.deleted_frames > 0 and changes.leaks == 0, changes.samples
    # Redis kept its data: nobody was told a room's history is gone.
    assert changes.resets == [] and changes.resets_unexpected == 0
    assert result.passed, result.failures


async def test_tally_counts_what_a_client_missed_repeated_and_reordered() -> None:
    """The drill's own bookkeeping, on made-up logs: it must be able to fail."""
    stream = [StoredMessage(f"100-{n}", (100, n), "") for n in range(1, 7)]
    client = DrillClient("http://127.0.0.1:9", "ann", "r1", deadline=0.0)
    try:
        # Joined late (first id 100-2), then: 100-3 twice, 100-5 before 100-4, 100-6 never.
        for n in (2, 3, 3, 5, 4):
            client.logs["r1"].record(f"100-{n}")
        client.say()  # sent, never acknowledged
        result = tally(
            DrillResult(clients=1, instances=2, seconds=1, rate=1, rooms=["lobby", "r1"]),
            [client],
            {"lobby": [], "r1": stream},
            {"lobby": (0, 0), "r1": (100, 6)},
        )
    finally:
        client.http.close()
    assert (result.expected, result.delivered, result.lost) == (5, 4, 1)
    assert (result.duplicated, result.out_of_order, result.unacked) == (1, 1, 1)
    assert not result.passed


def test_private_roles_fit_the_owners_join_bucket() -> None:
    plan = plan_private(20, ["a", "b"])
    assert plan is not None
    assert plan.members == {"a": [1, 3, 11], "b": [2, 3, 12]}
    assert plan.outsiders == [4, 14]
    assert (plan.kick, plan.ban) == ((11, "a"), (12, "b"))
    big = plan_private(1000, ["a", "b"])
    assert big is not None and sum(len(m) for m in big.members.values()) <= MAX_INVITES
    assert plan_private(20, []) is None


async def test_private_check_counts_what_a_non_member_read() -> None:
    """bench.private's check, on made-up logs: it must be able to fail."""
    plan = PrivatePlan(["p"], owner=0, members={"p": [1, 2]}, outsiders=[3], kick=(2, "p"),
                       ban=None)
    users = [DrillClient("http://127.0.0.1:9", name, "lobby", deadline=0.0)
             for name in ("own", "mem", "kid", "out")]
    try:
        t0 = 100.0
        kid, out = users[2], users[3]
        # Socket 1 was live across the kick: one message before `kicked`, one after.
        kid.sockets = [SocketLog(1, 101.0, ["p"], 108.0), SocketLog(2, 109.0, ["p"])]
        kid.events = [RoomEvent("chat", "p", 1, 103.0, 1), RoomEvent("kicked", "p", 2, 106.2, 1),
                      RoomEvent("chat", "p", 3, 106.3, 1),
                      # Socket 2 opened after the kick: anything of the room is a leak.
                      RoomEvent("chat", "p", 5, 109.5, 2)]
        out.sockets = [SocketLog(1, 101.0, [])]
        out.events = [RoomEvent("presence", "p", 1, 102.0, 1), RoomEvent("chat", "p", 2, 102.5, 1)]
        out.errors["forbidden"] += 4
        removal = Removal("kick", "p", "kid", at=5.0, offline=False, answered_at=6.0)
        result, failures = check(plan, users, [removal],
                                 {"p": [("own", False), ("out", True)]}, t0)
    finally:
        for user in users:
            user.http.close()
    assert (removal.frames_before, removal.frames_after, removal.stale_hellos) == (1, 2, 1)
    assert (removal.live_sockets, removal.kicked_sockets) == (1, 1)
    assert (result.outsider_frames, result.admitted, result.outsider_stored) == (1, 1, 1)
    assert result.refused == 4 and result.members == {"p": 2}
    assert sorted(failures) == [
        "private: outsider messages stored: 1", "private: outsiders admitted: 1",
        "private: private frames after removal: 2", "private: private frames to outsiders: 1"]


def _room(names: list[str]) -> list[DrillClient]:
    return [DrillClient("http://127.0.0.1:9", name, "r", deadline=0.0) for name in names]


def _truth(texts: dict[str, str], edits: dict[str, str], deleted: list[str]) -> RoomTruth:
    return RoomTruth("r", {m: edits.get(m, t) for m, t in texts.items()}, texts,
                     {m: stream_key(m) for m in texts}, edits,
                     [(f"9-{n}", m, "ann") for n, m in enumerate(deleted)], [])


async def test_lifecycle_check_compares_views_with_redis() -> None:
    """bench.lifecycle's check, on made-up logs: it must be able to fail."""
    ann, bob = users = _room(["ann", "bob"])
    try:
        ann.created.update({"ann.1": "r", "ann.2": "r"})
        ann.acks.update({"ann.1": "1-1", "ann.2": "1-2"})
        ann.changes = [
            ChangeOrder(EDIT, "r", "1-1", "ann.1", "ann.1 edit1", 100.0, 1, acked_at=101.0),
            ChangeOrder(DELETE, "r", "1-2", "ann.2", "", 102.0, 1, acked_at=106.0),
            # Answered, but Redis still has edit1: an edit lost.
            ChangeOrder(EDIT, "r", "1-1", "ann.1", "ann.1 edit3", 107.0, 1, acked_at=107.5)]
        for n in (1, 3):
            ann.logs["r"].record(f"1-{n}")
        ann.views["r"] = {"1-1": "ann.1 edit1", "1-3": "bob.1 drill"}
        # Bob: shown 1-1 in its old text, 1-3 never, deleted 1-2 still there.
        for n in (1, 2):
            bob.logs["r"].record(f"1-{n}")
        bob.views["r"] = {"1-1": "ann.1 drill", "1-2": "ann.2 drill"}
        bob.joins_sent = [JoinSent("r", 1, 0, 100.5), JoinSent("r", 2, 6, 107.0)]
        bob.seen = [
            Seen("chat", "r", "1-2", "ann.2 drill", 3, 1, 103.0),  # before the delete: its right
            Seen("deleted", "r", "1-2", "", 5, 1, 106.1),
            Seen("chat", "r", "1-2", "ann.2 drill", 6, 1, 106.2),  # after its deleted frame
            # A join sent after the delete was answered (106.0) brings it back.
            Seen("chat", "r", "1-2", "ann.2 drill", 8, 2, 107.2),
            Seen("reset", "r", "", "lost", 9, 2, 107.3)]  # Redis kept its data
        truth = {"r": _truth({"1-1": "ann.1 drill", "1-3": "bob.1 drill"},
                             {"1-1": "ann.1 edit1"}, ["1-2"])}
        result, failures = lifecycle.check(users, truth, {"r": (1, 3)}, t0=100.0)
    finally:
        for user in users:
            user.http.close()
    assert (result.edits_asked, result.edits_acked, result.deletes_acked) == (2, 2, 1)
    assert (result.edits_lost, result.deletes_lost, result.unasked) == (1, 0, 0)
    assert (result.views, result.compared) == (2, 4)
    assert (result.view_missing, result.view_stale, result.view_deleted) == (1, 1, 1)
    assert (result.deleted_frames, result.leaks, result.resets_unexpected) == (1, 2, 1)
    assert sorted(failures) == [
        "lifecycle: deleted text after the delete's answer: 2",
        "lifecycle: edits lost: 1",
        "lifecycle: resets without data loss: 1",
        "lifecycle: views missing a message: 1",
        "lifecycle: views showing a deleted message: 1",
        "lifecycle: views with an old text: 1"]


async def test_lifecycle_check_wants_a_reset_where_data_was_lost() -> None:
    ann, bob, cy = users = _room(["ann", "bob", "cy"])
    try:
        for user in users:
            user.logs["r"].record("1-1")
            user.views["r"] = {"1-1": "x"}
        # Ann and Bob had the room's epoch before Redis lost its data; Cy never did.
        ann.seen = [Seen("epoch", "r", "", "e1", 1, 1, 101.0),
                    Seen("reset", "r", "", "lost", 7, 2, 111.0)]
        ann.logs["r"].reset()
        ann.views["r"] = {}
        bob.seen = [Seen("epoch", "r", "", "e1", 1, 1, 101.0)]
        cy.seen = [Seen("chat", "r", "1-1", "x", 1, 1, 102.0)]
        truth = {"r": _truth({}, {}, [])}
        result, failures = lifecycle.check(users, truth, {"r": (0, 0)}, t0=100.0,
                                           loss=Loss(110.0, 112.0))
    finally:
        for user in users:
            user.http.close()
    assert [(r.user, r.reason) for r in result.resets] == [("ann", "lost")]
    assert (result.resets_expected, result.resets_missing, result.resets_unknowable) == (2, 1, 1)
    assert failures == ["lifecycle: resets missing after data loss: 1"]


def test_tally_counts_a_deleted_message_as_stored() -> None:
    client = DrillClient("http://127.0.0.1:9", "ann", "r1", deadline=0.0)
    try:
        client.say()
        client.say()
        client.acks.update({"ann.1": "100-1", "ann.2": "100-2"})
        client.outbox.clear()
        for n in (1, 2):
            client.logs["r1"].record(f"100-{n}")
        stream = [StoredMessage("100-1", (100, 1), "ann.1")]
        result = tally(
            DrillResult(clients=1, instances=2, seconds=1, rate=1, rooms=["lobby", "r1"]),
            [client], {"lobby": [], "r1": stream}, {"lobby": (0, 0), "r1": (100, 1)},
            deleted={"r1": {"100-2"}})
    finally:
        client.http.close()
    assert (result.sent, result.stored, result.acked_missing, result.unknown) == (2, 2, 0, 0)
    assert result.passed


class _Recorder:
    """Stands in for bench.chaos.Chaos: writes down what the drill asks of it (from the
    drill's worker thread) and calls `enough` once it was asked `count` things."""

    def __init__(self, count: int, enough: Callable[[], None]) -> None:
        self.asked: list[tuple[str, Any]] = []
        self.count, self.enough = count, enough

    def _ask(self, what: str, n: Any) -> None:
        self.asked.append((what, n))
        if len(self.asked) == self.count:
            self.enough()

    def graceful_restart(self, n: int, at: float) -> ChaosAction:
        self._ask("graceful", n)
        return ChaosAction(GRACEFUL, f"chat-{n}", at, seconds=0.1)

    def kill(self, n: int, at: float) -> ChaosAction:
        self._ask("kill", n)
        return ChaosAction("kill -9", f"chat-{n}", at)

    def restart_redis(self, *args: Any) -> ChaosAction:
        self._ask("redis", None)
        return ChaosAction("redis restart", "redis", 0.0)


async def test_rolling_restarts_each_instance_in_turn_and_nothing_else() -> None:
    """`--rolling` (an upgrade): supervisorctl restart of chat-1, chat-2, chat-3, chat-1 ...;
    never a kill -9 or a Redis restart, whatever the defaults ask for."""
    over = asyncio.Event()
    loop = asyncio.get_running_loop()
    chaos = _Recorder(5, lambda: loop.call_soon_threadsafe(over.set))
    # Half time long past: the defaults would restart Redis at once.
    actions = await asyncio.wait_for(_chaos_loop(
        chaos, instances=3, seconds=1.0, kill_interval=0.0, redis_restart=True,
        graceful_restart=True, t0=time.monotonic() - 10, sending_over=over,
        log=lambda line: None, rolling=True), 30)
    assert chaos.asked[:5] == [("graceful", n) for n in (1, 2, 3, 1, 2)]
    assert {kind for kind, _ in chaos.asked} == {"graceful"}
    assert _rolling_failures(actions, 3) == []
    assert _rolling_failures(actions[:2], 3) == [
        "rolling: only 2 of 3 instances were restarted (drill too short for the interval)"]
