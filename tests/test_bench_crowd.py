"""bench/crowd works end to end at a tiny size: 200 sockets, a room of 20, two HAProxy.

Two HAProxy processes share the front port as in a run that needs more than one
(bench/fronts.py). Numbers are checked for being there, never against a time.
"""

from __future__ import annotations

import math

import pytest

from bench import crowd

pytestmark = pytest.mark.cluster


def test_tiny_crowd_opens_every_socket_and_delivers_every_room_message() -> None:
    result = crowd.run(crowd.parse_args(
        ["--sockets", "200", "--members", "20", "--sockets-per-user", "10", "--haproxies", "2",
         "--window", "2", "--baseline", "1", "--settle", "1", "--rate", "10", "--seconds", "1"]))
    assert result.shape.haproxies == 2
    assert result.sockets_open == result.sockets_still_open == 200
    assert not result.failures
    assert len(result.haproxy_conns) == 2 and all(n > 0 for n in result.haproxy_conns)
    assert sum(result.haproxy_conns) == 200
    assert result.churn_rest == result.churn_window == 0  # presence never flapped
    roles = {row.role: row for row in result.rows}
    assert set(roles) == {"app", "haproxy", "redis"}
    assert roles["app"].rss_after > roles["app"].rss_before > 0
    assert all(row.cores >= 0 for row in result.rows)
    assert result.members == 20
    assert result.fanout.sent == 10
    assert result.fanout.received == result.expected == 200
    assert result.lost == 0 and result.fanout.stray == 0
    assert math.isfinite(result.p99_ms) and result.p99_ms >= result.p50_ms > 0
