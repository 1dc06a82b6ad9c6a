"""bench/smallrooms and the Node peer work end to end at a tiny size.

The Node peer is installed first if missing (bench/peers/node_install.py, the
step `make node-peer` runs): Debian's nodejs and npm as root, then `npm ci`.
Numbers are checked for being there, never against a time.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from bench import smallrooms
from bench.peers import node_install
from bench.targets import start_target

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def node_peer() -> None:
    """Node, npm and the peer's packages, installed when missing; a skip only when not root."""
    try:
        node_install.ensure()
    except node_install.NotInstallable as error:
        if os.geteuid() == 0:
            raise
        pytest.skip(f"the Node peer needs packages only root may install: {error}")


@pytest.mark.usefixtures("node_peer")
def test_tiny_dms_run_of_chatfleet_and_the_node_peer_counts_every_delivery() -> None:
    """The Node peer as its users connect it (a URL) and on the Redis's Unix socket."""
    args = smallrooms.parse_args(["dms", "--servers", "chatfleet,node,node-unix", "--clients", "12",
                                  "--rooms", "6", "--rates", "20", "--seconds", "2",
                                  "--drain", "20"])
    assert args.publishers == 12  # every client publishes to its own room
    results = smallrooms.fanout.run(args)
    assert list(results) == ["chatfleet", "node", "node-unix"]
    for kind, steps in results.items():
        [step] = steps
        assert step.sent > 0, kind
        assert step.received + step.lost == step.sent * 2, kind  # rooms of 2
        assert step.app_cpu_s > 0 and step.client_cpu_s >= 0, kind
        assert math.isfinite(step.p50_ms), kind
    [chatfleet] = results["chatfleet"]
    assert chatfleet.lost == 0
    text = smallrooms.report(args, results)
    assert "node" in text and "max msg/s" in text


def test_the_front_door_measured_is_haproxy_and_its_worker(tmp_path: Path) -> None:
    """chatfleet runs HAProxy as master and worker (`-W`, for reloads): the
    worker does the work, so its CPU must be in the front door's column."""
    target = start_target("chatfleet", 1, tmp_path)
    try:
        master, *workers = target.front_pids()
        assert workers, "only HAProxy's master: its worker's CPU would be missed"
        for pid in (master, *workers):
            assert Path(f"/proc/{pid}/comm").read_text().strip() == "haproxy"
            assert pid not in target.server_pids()
    finally:
        target.stop()


def step(rate: float, cpu_s: float, p99_ms: float, lost: int = 0) -> smallrooms.StepResult:
    """A step as fanout.run reports it: `rate` msg/s for 1 s, `cpu_s` of chat CPU."""
    return smallrooms.StepResult(
        server="chatfleet", rate=rate, offered_s=rate, offered_deliveries_s=2 * rate,
        delivered_s=2 * rate, lost=lost, p50_ms=1.0, p99_ms=p99_ms, p999_ms=p99_ms,
        server_cpu_us_per_delivery=0.0, server_cpu_share=cpu_s, client_cpu_share=0.1,
        busiest_worker_share=0.05, sent=int(rate), received=int(2 * rate), app_cpu_s=cpu_s)


def test_rounds_summary_takes_medians_and_the_rates_every_round_passed() -> None:
    rounds = [
        {"chatfleet": [step(500, 0.25, 5.0), step(1000, 0.40, 20.0), step(2000, 0.8, 90.0)]},
        {"chatfleet": [step(500, 0.30, 6.0), step(1000, 0.50, 150.0)]},  # stopped early
        {"chatfleet": [step(500, 0.20, 4.0), step(1000, 0.45, 30.0), step(2000, 0.7, 80.0)]},
    ]
    text = smallrooms.over_rounds(rounds)
    # 500 msg/s: 500, 600 and 400 µs per message; 2,000 was not run in every round.
    assert "chatfleet    500 msg/s     500 (400-600) µs/msg, p99 6.0 ms" in text
    assert "chatfleet   1000 msg/s     450 (400-500) µs/msg, p99 150.0 ms" in text
    assert "2000 msg/s" not in text
    assert "chatfleet: max msg/s passed in every round: 500" in text
