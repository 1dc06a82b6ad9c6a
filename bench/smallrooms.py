"""smallrooms: what one message costs in small rooms and direct messages, chatfleet against peers.

    python -m bench.smallrooms teams      # 1,000 clients in 100 rooms of 10 (`make smallrooms`)
    python -m bench.smallrooms dms        # 1,000 clients in 500 rooms of 2 (`make dms`)
    python -m bench.smallrooms teams --servers chatfleet,node --rates 1000,2000 --seconds 5
    python -m bench.smallrooms dms --servers chatfleet,node --rounds 2   # A B A B

In one big room a message's fixed cost hides behind its many deliveries; in
rooms of 10 or 2 it is most of the cost. Both workloads run bench/fanout's
machinery (the same start of each server kind behind HAProxy, one Redis for
all, the same raw-WebSocket clients of bench/loadgen.py) with every client
publishing in turn to its own room, and the rate stepped up until p99 passes
100 ms or a delivery is lost (at or past `--reference-rate`).

Per step it prints: msg/s sent, delivered/s, loss, p50/p99, the chat
processes' CPU per message and per delivery (all of them, Redis apart),
Redis CPU per message, and the load generator's cores and CPU per delivery
(its busiest worker near 1.0 would mean the clients were the limit), the
HAProxy's cores, and the cores of all of them together (near the machine's
count, the box itself was the limit). Then one summary line per server: the
max msg/s with p99 <= 100 ms and no loss.

The box's other work drifts over minutes, so one server's steps all before
the other's can favour either. `--rounds N` runs the servers in turn N times
(A B A B ...) and ends with each rate's median over the rounds, its spread,
and the rates every round passed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import asdict
from pathlib import Path

from bench import fanout
from bench.fanout import StepResult

# name: (clients, rooms, rates, reference rate): the two workloads.
WORKLOADS = {
    "teams": (1000, 100, "500,1000,1500,2000,3000,4000,5000,6000", 2000.0),
    "dms": (1000, 500, "500,1000,1500,2000,3000,4000,5000,6000", 2000.0),
}
SERVERS = "chatfleet,node,socketio"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The workload's sizes, then any bench.fanout option given after it (they win)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the servers in turn this many times (A B A B ...)")
    ours, rest = parser.parse_known_args(argv)
    clients, rooms, rates, reference = WORKLOADS[ours.workload]
    defaults = ["--servers", SERVERS, "--clients", str(clients), "--rooms", str(rooms),
                "--rates", rates, "--reference-rate", str(reference)]
    args = fanout.parse_args(defaults + rest)
    # Every client publishes, in turn, to its own room (after any --clients given).
    if "--publishers" not in rest:
        args.publishers = args.clients
    args.workload, args.json_out, args.rounds = ours.workload, ours.json, max(1, ours.rounds)
    return args


def per(cpu_seconds: float, count: int) -> float:
    """Microseconds of CPU per item."""
    return cpu_seconds / count * 1e6 if count else float("nan")


HEADER = (f"{'server':<9} {'msg/s':>6} {'delivered/s':>11} {'lost':>6} {'p50 ms':>7} "
          f"{'p99 ms':>8} {'srv µs/msg':>10} {'srv µs/dlv':>10} {'redis µs/msg':>12} "
          f"{'srv cores':>9} {'load cores':>10} {'load µs/dlv':>11} {'busiest wkr':>11} "
          f"{'front cores':>11} {'all cores':>9}")


def row(r: StepResult) -> str:
    return (f"{r.server:<9} {r.offered_s:>6.0f} {r.delivered_s:>11.0f} {r.lost:>6} "
            f"{r.p50_ms:>7.1f} {r.p99_ms:>8.1f} {per(r.app_cpu_s, r.sent):>10.1f} "
            f"{per(r.app_cpu_s, r.received):>10.1f} {per(r.redis_cpu_s, r.sent):>12.1f} "
            f"{r.server_cpu_share - sum(r.redis_shares):>9.2f} "
            f"{r.client_cpu_share:>10.2f} {per(r.client_cpu_s, r.received):>11.1f} "
            f"{r.busiest_worker_share:>11.2f} {r.front_cpu_share:>11.2f} "
            f"{all_cores(r):>9.2f}")


def all_cores(r: StepResult) -> float:
    """The cores the whole run took: servers, Redis, HAProxy and load generator."""
    return r.server_cpu_share + r.front_cpu_share + r.client_cpu_share


def max_rate(rows: list[StepResult]) -> str:
    """The highest msg/s of a step with p99 <= 100 ms and no loss."""
    passing = [r for r in rows if r.ok]
    return f"{max(r.offered_s for r in passing):,.0f} msg/s" if passing else "no step passed"


def report(args: argparse.Namespace, results: dict[str, list[StepResult]]) -> str:
    """The per-step table of every server, then each one's max passing rate."""
    lines = [f"\n{args.workload}: {args.clients} clients in {args.rooms} rooms of "
             f"{args.clients // args.rooms}, {args.instances} processes per server, "
             f"{args.seconds:g} s per step", HEADER]
    lines += [row(r) for rows in results.values() for r in rows]
    lines += [f"{kind}: max msg/s with p99 <= {fanout.P99_LIMIT_MS:.0f} ms and no loss: "
              f"{max_rate(rows)}" for kind, rows in results.items()]
    return "\n".join(lines)


def over_rounds(rounds: list[dict[str, list[StepResult]]]) -> str:
    """Per server and rate run in every round: the median chat µs per message
    (lowest-highest), the worst p99, and the rates every round passed."""
    lines = [f"\nover {len(rounds)} rounds (servers in turn): chat µs/msg median "
             "(lowest-highest), worst p99"]
    for kind in rounds[0]:
        by_rate = [{r.rate: r for r in result[kind]} for result in rounds]
        common = sorted(set.intersection(*(set(rates) for rates in by_rate)))
        for rate in common:
            steps = [rates[rate] for rates in by_rate]
            costs = [per(s.app_cpu_s, s.sent) for s in steps]
            lines.append(f"{kind:<9} {rate:>6.0f} msg/s {statistics.median(costs):>7.0f} "
                         f"({min(costs):.0f}-{max(costs):.0f}) µs/msg, "
                         f"p99 {max(s.p99_ms for s in steps):.1f} ms")
        passed = [rate for rate in common if all(rates[rate].ok for rates in by_rate)]
        lines.append(f"{kind}: max msg/s passed in every round: "
                     f"{max(passed):,.0f}" if passed else f"{kind}: no rate passed every round")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()[0]
    rounds = []
    for _ in range(args.rounds):
        results = fanout.run(args)
        print(report(args, results), flush=True)
        rounds.append(results)
    if len(rounds) > 1:
        print(over_rounds(rounds), flush=True)
    # The machine's other work shares the cores: say how busy it was (this run included).
    print(f"load average (1 min) before / after the run: {load_before:.2f} / "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    if args.json_out:
        rows = [{k: [asdict(r) for r in rs] for k, rs in results.items()} for results in rounds]
        args.json_out.write_text(json.dumps(rows[0] if len(rows) == 1 else rows, indent=1))


if __name__ == "__main__":
    main()
