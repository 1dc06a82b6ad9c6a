"""bench/fanout works end to end at a tiny size (its numbers are read, never asserted on)."""

from __future__ import annotations

import argparse

import pytest

from bench.fanout import run

pytestmark = pytest.mark.cluster


def test_tiny_fanout_run_delivers_everything() -> None:
    args = argparse.Namespace(
        clients=20, rooms=2, instances=2, publishers=4, workers=2, rates=[10.0],
        seconds=2.0, drain=20.0,
    )
    [step] = run(args)
    assert step.lost == 0
    assert step.offered_deliveries_s > 0
    assert step.delivered_s == step.offered_deliveries_s  # every delivery counted once
    assert step.p50_ms > 0
