"""bench/fanout's cluster mode and bench/scaling work end to end at a tiny size.

Numbers are read, never asserted on: only that nothing was lost, every
delivery was counted once, and each shard was measured.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import scaling
from rigs.redis_cluster import SLOTS, RedisCluster, free_cluster_ports

pytestmark = pytest.mark.cluster


def test_tiny_scaling_row_on_three_shards_delivers_everything() -> None:
    args = scaling.parse_args(["--shards", "3", "--processes", "2", "--clients", "20",
                               "--rooms", "6", "--rates", "10", "--common-rate", "10",
                               "--seconds", "2", "--drain", "20"])
    [row] = scaling.run(args)
    [step] = row.steps
    assert (row.shards, row.processes) == (3, 2)
    assert step.lost == 0
    assert step.offered_deliveries_s > 0
    assert step.delivered_s == step.offered_deliveries_s  # each counted once
    assert len(step.redis_shares) == 3
    assert sum(step.shard_rooms) == 6
    assert "| 3 | 2 |" in scaling.table([row], args.common_rate)


def test_a_one_primary_cluster_is_joined_by_hand(tmp_path: Path) -> None:
    """redis-cli --cluster create wants 3 primaries; the 1-shard row needs one."""
    [port] = free_cluster_ports("127.0.0.1", 1)
    cluster = RedisCluster("127.0.0.1", [port], tmp_path, replicas=0)
    cluster.start()
    try:
        [node] = cluster.nodes()
        assert node.is_primary and node.slots == SLOTS
        assert cluster.primary_for("chat:{lobby}:stream") == port
    finally:
        cluster.stop()
