"""bench/hostile runs every attack end to end at a tiny size and prints its table.

What the attacks got back is read, never asserted on: only that the tool
completes, with one row per attack (after the baseline row).
"""

from __future__ import annotations

import pytest

from bench import hostile


@pytest.mark.cluster
def test_tiny_hostile_run_prints_a_row_per_attack(capsys: pytest.CaptureFixture[str]) -> None:
    rows = hostile.run(hostile.parse_args(["--scale", "0.02", "--settle", "0.5"]))
    assert [row.name for row in rows] == ["baseline"] + [a.name for a in hostile.ATTACKS]
    printed = capsys.readouterr().out
    for attack in hostile.ATTACKS:
        assert f"| {attack.number} | {attack.name}" in printed
