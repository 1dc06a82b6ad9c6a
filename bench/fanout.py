"""fanout: deliveries a second, latency and CPU cost of chatfleet and a python-socketio peer.

    python -m bench.fanout                       # 400 clients, 1 room, 2 processes, both servers
    python -m bench.fanout --servers chatfleet --clients 1000 --rooms 10 --rates 20,50,100
    python -m bench.fanout --plot fanout.png     # also p99 vs delivered/s, both servers
    python -m bench.fanout --servers chatfleet --redis-shards 3 --clients 1000 --rooms 50 \
        --publishers 100                         # chatfleet on a 3-primary Redis Cluster

For each server kind in `--servers` (chatfleet's stack, and the same chat on
python-socketio + AsyncRedisManager, see bench/peers/) it starts N processes
behind HAProxy, connects C clients through HAProxy with the same client code
(bench/loadgen.py), and steps the publish rate up until p99 passes 100 ms or a
delivery is lost, but never stops below the reference rate (50 msg/s: the
issue's 400 clients in one room make it 20,000 deliveries/s), so the summary
always has both servers at the reference load. Both kinds use one Redis: the
first server's. Short unreported warm-up steps come first.

Per step: messages offered per second, deliveries offered and delivered per
second, loss, p50/p99/p99.9 end-to-end latency, server CPU (server processes
and Redis, from /proc) per delivered message, each Redis shard's cores, and
the load generator's cores (all workers, and the busiest one: near 1.0 means
the clients were the limit). A summary compares the kinds at the reference
load and at their best step.

Cluster mode (`--redis-shards S`, chatfleet only): the stack runs on a Redis
Cluster of S primaries (`--cluster-replicas`, default 0, leaves the CPU to
the shape being measured). Rooms hash to shards, so load spreads only over
many rooms, and only over the rooms that have publishers: each worker's first
`publishers / workers` clients publish, so make that at least `--rooms`.
bench/scaling.py runs this over a grid of shards and processes.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from bench.loadgen import StepReport, WorkerPlan, worker_main
from bench.targets import KINDS, ClusterChatfleetTarget, RedisRef, Target, start_target
from pubsub.keys import Keys

P99_LIMIT_MS = 100.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The reference load: 400 clients in one room, 2 processes, 50 msg/s.
REFERENCE_RATE = 50.0
# Run by default: the Node peer ("node") needs `make node-peer` first, so it is asked for.
DEFAULT_SERVERS = ("chatfleet", "socketio")
WORKER_READY_TIMEOUT_SECONDS = 300.0
# Before the first reported step: short steps until one loses nothing.
WARM_UP_SECONDS = 1.0
WARM_UP_TRIES = 5


@dataclass
class StepResult:
    server: str
    rate: float  # messages per second asked for
    offered_s: float  # messages per second sent
    offered_deliveries_s: float
    delivered_s: float
    lost: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    server_cpu_us_per_delivery: float
    server_cpu_share: float  # of one core
    client_cpu_share: float  # all workers, of one core
    busiest_worker_share: float
    redis_shares: list[float] = field(default_factory=list)  # each shard's primary, of one core
    shard_rooms: list[int] = field(default_factory=list)  # rooms each shard owns (a cluster)
    # Totals of the step, for costs per message (bench/smallrooms.py):
    sent: int = 0  # messages published
    received: int = 0  # deliveries counted by the clients
    app_cpu_s: float = 0.0  # CPU seconds of the chat processes (server minus Redis)
    redis_cpu_s: float = 0.0  # CPU seconds of the Redis processes (`redis_pids`)
    client_cpu_s: float = 0.0  # CPU seconds of the load generator (all workers)
    front_cpu_share: float = 0.0  # the HAProxy in front (`front_pids`), of one core

    @property
    def busiest_shard_share(self) -> float:
        return max(self.redis_shares, default=float("nan"))

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.p99_ms <= P99_LIMIT_MS


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def room_members(rooms: list[str], clients: int) -> dict[str, int]:
    members = {room: 0 for room in rooms}
    for i in range(clients):
        members[rooms[i % len(rooms)]] += 1
    return members


def worker_plans(args: argparse.Namespace, target: Target, rooms: list[str]) -> list[WorkerPlan]:
    """Clients and publishers split evenly over the workers."""
    plans = []
    for w in range(args.workers):
        first = w * args.clients // args.workers
        last = (w + 1) * args.clients // args.workers
        publishers = (w + 1) * args.publishers // args.workers - w * args.publishers // args.workers
        plans.append(WorkerPlan(
            protocol=target.protocol, url=target.url, instances=len(target.instance_urls),
            rooms=rooms, first_client=first, clients=last - first,
            publishers=min(publishers, last - first)))
    return plans


Workers = tuple[list[Connection], list[multiprocessing.Process]]


def start_workers(plans: list[WorkerPlan]) -> Workers:
    pipes: list[Connection] = []
    procs: list[multiprocessing.Process] = []
    for plan in plans:
        parent, child = multiprocessing.Pipe()
        proc = multiprocessing.Process(target=worker_main, args=(plan, child), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    return pipes, procs


def wait_ready(pipes: list[Connection]) -> None:
    for pipe in pipes:
        if not pipe.poll(WORKER_READY_TIMEOUT_SECONDS):
            raise TimeoutError("a load-generator worker never got its clients connected")
        answer = pipe.recv()
        if answer != "ready":
            raise RuntimeError(answer)


def run_step(args: argparse.Namespace, kind: str, step: int, rate: float,
             pipes: list[Connection], pids: list[int], members: dict[str, int],
             redis_pids: Sequence[int] = (), front_pids: Sequence[int] = ()) -> StepResult:
    """One rate for `args.seconds`: every worker publishes its share and counts.

    `redis_pids`: the Redis processes whose cores are reported one by one (shards);
    `front_pids`: the HAProxy in front, reported apart from the server.
    """
    total_publishers = max(1, sum(args.publisher_shares))
    before = sum(cpu_seconds(pid) for pid in pids)
    redis_before = [cpu_seconds(pid) for pid in redis_pids]
    front_before = sum(cpu_seconds(pid) for pid in front_pids)
    started = time.monotonic()
    for pipe, share in zip(pipes, args.publisher_shares, strict=True):
        pipe.send(("step", step, rate * share / total_publishers, args.seconds, args.drain))
    reports: list[StepReport] = [pipe.recv() for pipe in pipes]
    elapsed = time.monotonic() - started
    server_cpu = sum(cpu_seconds(pid) for pid in pids) - before
    front_cpu = sum(cpu_seconds(pid) for pid in front_pids) - front_before
    redis_cpu = [cpu_seconds(pid) - b for pid, b in zip(redis_pids, redis_before, strict=True)]
    sent = sum(n for r in reports for n in r.sent_by_room.values())
    expected = sum(n * members[room] for r in reports for room, n in r.sent_by_room.items())
    received = sum(r.received for r in reports)
    latencies = sorted(x for r in reports for x in r.latencies_ms)
    return StepResult(
        server=kind, rate=rate,
        offered_s=sent / args.seconds,
        offered_deliveries_s=expected / args.seconds,
        delivered_s=received / args.seconds,
        lost=max(0, expected - received),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        p999_ms=percentile(latencies, 0.999),
        server_cpu_us_per_delivery=server_cpu / max(1, received) * 1e6,
        server_cpu_share=server_cpu / elapsed,
        client_cpu_share=sum(r.cpu_seconds for r in reports) / elapsed,
        busiest_worker_share=max(r.cpu_seconds for r in reports) / elapsed,
        redis_shares=[c / elapsed for c in redis_cpu],
        sent=sent, received=received,
        app_cpu_s=server_cpu - sum(redis_cpu), redis_cpu_s=sum(redis_cpu),
        client_cpu_s=sum(r.cpu_seconds for r in reports),
        front_cpu_share=front_cpu / elapsed,
    )


def warm_up(args: argparse.Namespace, kind: str, pipes: list[Connection], pids: list[int],
            members: dict[str, int]) -> None:
    """Short unreported steps at the lowest rate until one loses nothing.

    python-socketio's Redis manager subscribes only after a process's first
    client connected, so messages right after the clients joined can miss a
    process; a warm-up keeps that start-up effect out of the table.
    """
    low = replace_seconds(args, WARM_UP_SECONDS)
    for attempt in range(1, WARM_UP_TRIES + 1):
        result = run_step(low, kind, -attempt, min(args.rates), pipes, pids, members)
        if result.lost == 0:
            return
        print(f"{kind}: warm-up {attempt} lost {result.lost} of "
              f"{result.offered_deliveries_s * WARM_UP_SECONDS:.0f}", flush=True)
    raise RuntimeError(f"{kind} still loses messages after {WARM_UP_TRIES} warm-up steps")


def replace_seconds(args: argparse.Namespace, seconds: float) -> argparse.Namespace:
    copy = argparse.Namespace(**vars(args))
    copy.seconds = seconds
    return copy


def rooms_per_shard(target: Target, rooms: list[str]) -> list[int]:
    """How many of `rooms` each shard primary owns (empty unless on a Redis Cluster)."""
    if not isinstance(target, ClusterChatfleetTarget):
        return []
    keys = Keys(sharded=True)
    owners = [target.cluster.primary_for(keys.stream(room)) for room in rooms]
    return [owners.count(port) for port in target.cluster.primary_ports]


def published_rooms(plans: list[WorkerPlan]) -> set[str]:
    """The rooms some publisher is in (a worker's first `publishers` clients publish)."""
    return {p.rooms[i % len(p.rooms)]
            for p in plans for i in range(p.first_client, p.first_client + p.publishers)}


def measure(args: argparse.Namespace, kind: str, target: Target) -> list[StepResult]:
    """Connect the clients to `target` and step the rate up until it fails."""
    rooms = [f"bench{r}" for r in range(args.rooms)]
    members = room_members(rooms, args.clients)
    plans = worker_plans(args, target, rooms)
    args.publisher_shares = [p.publishers for p in plans]
    shard_rooms = rooms_per_shard(target, rooms)
    pipes, procs = start_workers(plans)
    results: list[StepResult] = []
    try:
        wait_ready(pipes)
        print(f"\n{kind}: {args.clients} clients in {args.rooms} room(s) over "
              f"{len(target.instance_urls)} processes; {sum(args.publisher_shares)} publishers; "
              f"{args.seconds:g} s per step", flush=True)
        if len(published_rooms(plans)) < len(rooms):
            print(f"only {len(published_rooms(plans))} of {len(rooms)} rooms have publishers "
                  "(--publishers below --rooms x --workers)", flush=True)
        if shard_rooms:
            print(f"Redis Cluster: {len(shard_rooms)} primary(-ies) owning "
                  f"{'/'.join(map(str, shard_rooms))} rooms", flush=True)
        print(HEADER, flush=True)
        pids = target.server_pids()
        redis_pids, front_pids = target.redis_pids(), target.front_pids()
        warm_up(args, kind, pipes, pids, members)
        for step, rate in enumerate(args.rates, start=1):
            result = run_step(args, kind, step, rate, pipes, pids, members, redis_pids,
                              front_pids)
            result.shard_rooms = shard_rooms
            results.append(result)
            print_row(result)
            if not result.ok and rate >= args.reference_rate:
                break
        for pipe in pipes:
            pipe.send(("stop",))
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return results


def run(args: argparse.Namespace) -> dict[str, list[StepResult]]:
    """Every kind in `args.servers`, one after another, against one Redis; all stopped after."""
    var = Path(tempfile.mkdtemp(prefix="chatfleet-fanout-"))
    targets: list[Target] = []
    results: dict[str, list[StepResult]] = {}
    try:
        redis: RedisRef | None = None
        for kind in args.servers:
            folder = var / kind
            folder.mkdir()
            target = start_target(kind, args.instances, folder, redis=redis,
                                  redis_shards=args.redis_shards,
                                  cluster_replicas=args.cluster_replicas)
            targets.append(target)
            redis = redis or target.redis
            results[kind] = measure(args, kind, target)
            target.stop_instances()  # idle processes would only add noise to the next kind
    finally:
        for target in reversed(targets):  # the Redis owner last
            target.stop()
        shutil.rmtree(var, ignore_errors=True)
    return results


HEADER = (f"{'server':<9} {'msg/s':>6} {'offered/s':>10} {'delivered/s':>11} {'lost':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'srv µs/dlv':>10} {'srv cores':>9} "
          f"{'redis cores':>14} {'load cores':>10} {'busiest wkr':>11}")


def shard_cores(r: StepResult) -> str:
    """Each shard's cores, "0.12/0.10/0.11" (one plain Redis: one number)."""
    return "/".join(f"{share:.2f}" for share in r.redis_shares) or "-"


def print_row(r: StepResult) -> None:
    print(f"{r.server:<9} {r.offered_s:>6.0f} {r.offered_deliveries_s:>10.0f} "
          f"{r.delivered_s:>11.0f} {r.lost:>6} {r.p50_ms:>7.1f} {r.p99_ms:>7.1f} "
          f"{r.p999_ms:>8.1f} {r.server_cpu_us_per_delivery:>10.1f} "
          f"{r.server_cpu_share:>9.2f} {shard_cores(r):>14} {r.client_cpu_share:>10.2f} "
          f"{r.busiest_worker_share:>11.2f}", flush=True)


def best(results: list[StepResult]) -> StepResult | None:
    """The step with the most deliveries a second at p99 <= 100 ms and no loss."""
    passing = [r for r in results if r.ok]
    return max(passing, key=lambda r: r.delivered_s) if passing else None


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) and not math.isnan(b) else "n/a"


def print_summary(results: dict[str, list[StepResult]], reference_rate: float) -> None:
    print(f"\nsummary: at {reference_rate:.0f} msg/s, and each server's best step "
          f"(p99 <= {P99_LIMIT_MS:.0f} ms, no loss)", flush=True)
    print(HEADER)
    at_reference = {k: next((r for r in rs if r.rate == reference_rate), None)
                    for k, rs in results.items()}
    for row in at_reference.values():
        if row is not None:
            print_row(row)
    tops = {k: best(rs) for k, rs in results.items()}
    for kind, top in tops.items():
        print(f"{kind}: max delivered/s at p99 <= {P99_LIMIT_MS:.0f} ms and no loss: "
              f"{top.delivered_s:,.0f}" if top else f"{kind}: no step passed")
    if "chatfleet" in results and "socketio" in results:
        ours, theirs = at_reference["chatfleet"], at_reference["socketio"]
        if ours and theirs:
            print("socketio / chatfleet, server CPU µs per delivery at the reference load: "
                  + ratio(theirs.server_cpu_us_per_delivery, ours.server_cpu_us_per_delivery))
        top_ours, top_theirs = tops["chatfleet"], tops["socketio"]
        if top_ours and top_theirs:
            print("chatfleet / socketio, max delivered/s: "
                  + ratio(top_ours.delivered_s, top_theirs.delivered_s))


def plot(results: dict[str, list[StepResult]], path: Path) -> None:
    """p99 latency against delivered messages/s, one line per server kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, rows in results.items():
        ax.plot([r.delivered_s for r in rows], [r.p99_ms for r in rows], marker="o", label=kind)
    ax.axhline(P99_LIMIT_MS, color="grey", linestyle="--", linewidth=1, label="100 ms")
    ax.set_xlabel("delivered messages/s")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.set_title("fan-out: p99 latency vs deliveries")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_servers(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"servers are {', '.join(KINDS)}; got {text!r}")
    return kinds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--servers", type=parse_servers,
                        help=f"comma-separated server kinds of {', '.join(KINDS)}, run in "
                             f"this order (default: {','.join(DEFAULT_SERVERS)}; chatfleet "
                             "alone with --redis-shards)")
    parser.add_argument("--clients", type=int, default=400)
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument("--instances", type=int, default=2, help="server processes per kind")
    parser.add_argument("--publishers", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--rates", default="10,25,50,100,150,200,300",
                        type=lambda s: [float(x) for x in s.split(",")],
                        help="messages per second offered in total, step by step")
    parser.add_argument("--reference-rate", type=float, default=REFERENCE_RATE,
                        help="the step compared in the summary")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=10.0,
                        help="after a step, wait at most this long for late deliveries")
    parser.add_argument("--redis-shards", type=int, default=0,
                        help="0: one plain Redis; S >= 1: a Redis Cluster of S primaries "
                             "(chatfleet only)")
    parser.add_argument("--cluster-replicas", type=int, default=0,
                        help="replicas per cluster primary (0 keeps the CPU for the shape)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--plot", type=Path, help="write a PNG of p99 vs delivered/s here")
    args = parser.parse_args(argv)
    if args.servers is None:
        args.servers = ["chatfleet"] if args.redis_shards > 0 else list(DEFAULT_SERVERS)
    if args.redis_shards > 0 and args.servers != ["chatfleet"]:
        parser.error("--redis-shards needs --servers chatfleet (the peer has no cluster mode)")
    return args


def main() -> None:
    args = parse_args()
    results = run(args)
    print_summary(results, args.reference_rate)
    if args.json:
        rows = {k: [asdict(r) for r in rs] for k, rs in results.items()}
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
