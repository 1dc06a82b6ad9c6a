"""scaling: how chatfleet's delivered messages/s change with Redis shards and chat processes.

    python -m bench.scaling                           # shards 1,3 x processes 2,6 (make scaling)
    python -m bench.scaling --shards 0,1,3 --processes 2,4,6 --json scaling.json

For each configuration it runs bench/fanout's stepped fan-out in cluster
mode: a fresh Redis Cluster of S primaries (0 = one plain Redis), N chat
processes behind HAProxy, 1,000 clients in 50 rooms (room keys hash to
shards, so many rooms spread the load; every room has publishers), the rate
stepped up until p99 passes 100 ms or a delivery is lost. One row per
configuration: the most deliveries a second that passed, and at a common
rate every configuration reaches: p99, server CPU per delivery (chat
processes and every Redis node), and the Redis cores of all shards together
and of the busiest one.

Everything (Redis nodes, chat processes, HAProxy, the load generator) shares
one machine, so more shards or processes cannot add cores here: the table
shows the shape (how the Redis work splits over shards, what grows with
processes) and what stays flat, not the throughput of more hosts.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import fanout
from bench.fanout import P99_LIMIT_MS, StepResult

DEFAULT_RATES = "100,200,300,400,500,600,800,1000,1250,1500"
COMMON_RATE = 200.0  # msg/s: 4,000 deliveries/s with 20 clients a room


@dataclass
class ScalingRow:
    """One configuration's steps and the two it is summed up by."""

    shards: int  # 0: one plain Redis
    processes: int
    steps: list[StepResult]
    seconds: float  # wall time of the whole configuration, start to stop

    @property
    def best(self) -> StepResult | None:
        return fanout.best(self.steps)

    def at(self, rate: float) -> StepResult | None:
        return next((r for r in self.steps if r.rate == rate), None)


def fanout_args(args: argparse.Namespace, shards: int, processes: int) -> argparse.Namespace:
    """bench/fanout's arguments for one configuration (never stopping below the common rate)."""
    argv = ["--servers", "chatfleet", "--redis-shards", str(shards),
            "--cluster-replicas", str(args.cluster_replicas), "--instances", str(processes),
            "--clients", str(args.clients), "--rooms", str(args.rooms),
            "--publishers", str(args.publishers or args.rooms * args.workers),
            "--workers", str(args.workers), "--rates", ",".join(f"{r:g}" for r in args.rates),
            "--reference-rate", f"{args.common_rate:g}",
            "--seconds", f"{args.seconds:g}", "--drain", f"{args.drain:g}"]
    return fanout.parse_args(argv)


def run(args: argparse.Namespace) -> list[ScalingRow]:
    """Every configuration of the grid, one after another, each on its own fresh stack."""
    rows = []
    for shards in args.shards:
        for processes in args.processes:
            started = time.monotonic()
            print(f"\n== {shards or 'one plain'} Redis shard(s), {processes} chat processes",
                  flush=True)
            steps = fanout.run(fanout_args(args, shards, processes))["chatfleet"]
            rows.append(ScalingRow(shards, processes, steps, time.monotonic() - started))
    return rows


def _cell(value: float, fmt: str) -> str:
    return "n/a" if value != value else format(value, fmt)  # NaN: no such step


def table(rows: list[ScalingRow], common_rate: float) -> str:
    """The rows as a Markdown table (what the README shows)."""
    c = f"{common_rate:g} msg/s"
    lines = [
        f"| Redis shards | chat processes | max delivered/s (p99 ≤ {P99_LIMIT_MS:g} ms, no loss) "
        f"| at msg/s | p99 at {c} | server µs/delivery at {c} | Redis cores at {c}: all shards "
        f"| busiest shard | rooms per shard | busiest load worker at max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        top, common = row.best, row.at(common_rate)
        nan = float("nan")
        shares = common.redis_shares if common else []
        rooms = (top or common or (row.steps[0] if row.steps else None))
        lines.append(" | ".join([
            f"| {row.shards or '0 (plain)'}", str(row.processes),
            _cell(top.delivered_s if top else nan, ",.0f"),
            _cell(top.offered_s if top else nan, ",.0f"),
            _cell(common.p99_ms if common else nan, ".1f") + " ms",
            _cell(common.server_cpu_us_per_delivery if common else nan, ".1f"),
            _cell(sum(shares) if shares else nan, ".2f"),
            _cell(common.busiest_shard_share if common else nan, ".2f"),
            "/".join(map(str, rooms.shard_rooms)) if rooms and rooms.shard_rooms else "all",
            _cell(top.busiest_worker_share if top else nan, ".2f") + " |",
        ]))
    return "\n".join(lines)


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--shards", type=parse_ints, default=[1, 3],
                        help="Redis Cluster primaries per configuration (0: one plain Redis)")
    parser.add_argument("--processes", type=parse_ints, default=[2, 6],
                        help="chat processes per configuration")
    parser.add_argument("--cluster-replicas", type=int, default=0)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--publishers", type=int, default=0,
                        help="publishing clients (default: rooms x workers: every room has some)")
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--rates", default=DEFAULT_RATES,
                        type=lambda s: [float(x) for x in s.split(",")],
                        help="messages per second offered in total, step by step")
    parser.add_argument("--common-rate", type=float, default=COMMON_RATE,
                        help="the step every configuration is compared at (one of --rates)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per step")
    parser.add_argument("--drain", type=float, default=5.0,
                        help="after a step, wait at most this long for late deliveries")
    parser.add_argument("--json", type=Path, help="also write every step of every row here")
    args = parser.parse_args(argv)
    if args.common_rate not in args.rates:
        parser.error("--common-rate must be one of --rates")
    return args


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    rows = run(args)
    print(f"\nscaling: {args.clients} clients in {args.rooms} rooms, {args.seconds:g} s steps, "
          f"{time.monotonic() - started:.0f} s in all\n")
    print(table(rows, args.common_rate), flush=True)
    if args.json:
        args.json.write_text(json.dumps(
            [{"shards": r.shards, "processes": r.processes, "seconds": r.seconds,
              "steps": [asdict(s) for s in r.steps]} for r in rows], indent=1))


if __name__ == "__main__":
    main()
