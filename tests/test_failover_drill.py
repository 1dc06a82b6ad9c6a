"""The short failover drill against a stack of its own: kill -9, graceful restart, Redis restart.

It starts its own supervisord (not the session `stack` fixture): killing and
restarting processes would disturb every other test using that one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.drill_client import DrillClient
from bench.failover import run_drill
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
