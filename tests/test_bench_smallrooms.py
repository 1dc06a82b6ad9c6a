"""bench/smallrooms and the Node peer work end to end at a tiny size.

The Node peer is installed first if missing (bench/peers/node_install.py, the
step `make node-peer` runs): Debian's nodejs and npm as root, then `npm ci`.
Numbers are checked for being there, never against a time.
"""

from __future__ import annotations

import math
import os

import pytest

from bench import smallrooms
from bench.peers import node_install

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
    args = smallrooms.parse_args(["dms", "--servers", "chatfleet,node", "--clients", "12",
                                  "--rooms", "6", "--rates", "20", "--seconds", "2",
                                  "--drain", "20"])
    assert args.publishers == 12  # every client publishes to its own room
    results = smallrooms.fanout.run(args)
    assert list(results) == ["chatfleet", "node"]
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
