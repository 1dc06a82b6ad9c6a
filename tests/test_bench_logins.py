"""bench/logins runs end to end at a tiny size and prints its rows.

Its figures are checked for being there, never against a time.
"""

from __future__ import annotations

import pytest

from bench import logins


@pytest.mark.cluster
def test_tiny_logins_run_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    result = logins.run(logins.parse_args(
        ["--accounts", "6", "--logins", "12", "--concurrency", "2", "--listeners", "2",
         "--chat-rate", "20", "--login-rate", "10", "--seconds", "2", "--drain", "1"]))
    # Right passwords, well under the pool's queue: every login of part 1 gets in.
    assert result.fast.statuses[302] == 12
    assert result.fast.per_second > 0 and result.fast.latencies_ms
    idle, busy = result.phases
    assert busy.logins is not None and sum(busy.logins.statuses.values()) == 20
    for phase in (idle, busy):
        assert phase.sent == 40 and phase.expected == 80
        assert phase.latencies_ms
    printed = capsys.readouterr().out
    for row in ("| as fast as it goes, 2 in flight | 12 | 12 |", "| phase B, paced 10/s | 20 |",
                "| A | 0 | 40 |", "| B | 10 | 40 |", "chat p99, B - A:"):
        assert row in printed
