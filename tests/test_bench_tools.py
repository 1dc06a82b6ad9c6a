"""bench/idle, bench/storm and bench/micro work end to end at a tiny size.

Their numbers are checked for being there and positive, never against a time.
"""

from __future__ import annotations

import math

import pytest

from bench import idle, micro, storm


@pytest.mark.cluster
def test_tiny_idle_run_opens_every_socket_on_both_servers() -> None:
    results = idle.run(idle.parse_args(
        ["--sockets", "50", "--sockets-per-user", "10", "--window", "2", "--baseline", "1",
         "--settle", "1", "--servers", "chatfleet,socketio"]))
    assert [r.server for r in results] == ["chatfleet", "socketio"]
    for result in results:
        assert result.sockets_open == 50
        assert result.sockets_still_open == 50
        roles = {row.role: row for row in result.rows}
        assert set(roles) == {"app", "haproxy", "redis"}
        assert roles["app"].rss_after > roles["app"].rss_before > 0
        assert all(row.cores >= 0 for row in result.rows)


@pytest.mark.cluster
def test_tiny_storm_resumes_everyone_and_chatfleet_loses_nothing() -> None:
    chatfleet, socketio = storm.run(storm.parse_args(
        ["--clients", "30", "--rate", "10", "--servers", "chatfleet,socketio"]))
    for result in (chatfleet, socketio):
        assert result.displaced == 30
        assert result.resumed == 30
        assert math.isfinite(result.resume_all_s) and result.resume_all_s > 0
        assert result.peak_handshakes_s > 0
        assert result.published > 0
        assert result.repeated == 0
        assert result.reordered == 0
    # Resumed from history: nothing lost. (The peer has no history: its misses are by design.)
    assert chatfleet.lost == 0
    assert chatfleet.getex_count > 0 and chatfleet.getex_exec_p99_us > 0
    assert chatfleet.probe_rtt_p99_ms > 0


def test_tiny_micro_run_times_every_step() -> None:
    rows = micro.run(micro.parse_args(
        ["--iterations", "2000", "--sockets", "10", "--members", "100", "--publishes", "100"]))
    steps = [row.what for row in rows]
    assert len(steps) == len(set(steps)) == 12
    assert any("Unix socket" in step for step in steps)
    assert all(row.us > 0 and row.count > 0 for row in rows)
