"""The short failover drill against a stack of its own: kill -9, graceful restart, Redis restart,
and private rooms with a kick and a ban during it.

It starts its own supervisord (not the session `stack` fixture): killing and
restarting processes would disturb every other test using that one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.drill_client import DrillClient, RoomEvent, SocketLog
from bench.failover import run_drill
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
