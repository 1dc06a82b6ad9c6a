"""fanout: how many deliveries a second chatfleet holds, at what latency and CPU cost.

    python -m bench.fanout                       # 400 clients, 1 room, 2 instances
    python -m bench.fanout --clients 1000 --rooms 10 --rates 20,50,100,200

Starts its own stack (rate limit off), spreads C clients over the instances
through HAProxy, and steps the publish rate up until p99 passes 100 ms or a
delivery is lost. Per step it prints offered and delivered messages/s,
p50/p99/p99.9 end-to-end latency, loss, and server CPU (chat processes and
Redis, from /proc) per delivered message; the load generator's own CPU is
shown too, so a reader can tell which side was the limit.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.loadgen import StepReport, WorkerPlan, worker_main
from stack.ports import settings_on_free_ports
from stack.run import Stack

P99_LIMIT_MS = 100.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class StepResult:
    rate: float
    offered_deliveries_s: float
    delivered_s: float
    lost: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    server_cpu_us_per_delivery: float
    server_cpu_share: float  # of one core
    client_cpu_share: float


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def server_pids(stack: Stack) -> list[int]:
    names = [f"chat:chat-{n}" for n in range(1, stack.settings.instances + 1)] + ["redis"]
    return [int(stack.ctl("pid", name).strip()) for name in names]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def start_stack(instances: int) -> tuple[Stack, Path]:
    var = Path(tempfile.mkdtemp(prefix="chatfleet-fanout-"))
    # A benchmark floods on purpose: no rate limit, for this stack only.
    stack = Stack(settings_on_free_ports(instances, var), env={"CHAT_RATE_LIMIT": "0"})
    stack.start()
    try:
        stack.wait_ready()
    except BaseException:
        stack.stop()  # never leave a half-started stack behind
        shutil.rmtree(var, ignore_errors=True)
        raise
    return stack, var


def run(args: argparse.Namespace) -> list[StepResult]:
    stack, var = start_stack(args.instances)
    rooms = [f"bench{r}" for r in range(args.rooms)]
    members = {room: 0 for room in rooms}
    for i in range(args.clients):
        members[rooms[i % len(rooms)]] += 1
    pipes = []
    procs = []
    try:
        per_worker = args.clients // args.workers
        for w in range(args.workers):
            plan = WorkerPlan(
                url=stack.url, instances=args.instances, rooms=rooms,
                first_client=w * per_worker,
                clients=per_worker if w < args.workers - 1 else args.clients - w * per_worker,
                publishers=args.publishers if w == 0 else 0,
            )
            parent, child = multiprocessing.Pipe()
            proc = multiprocessing.Process(target=worker_main, args=(plan, child), daemon=True)
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        for pipe in pipes:
            answer = pipe.recv()
            if answer != "ready":
                raise RuntimeError(answer)
        print(f"{args.clients} clients in {args.rooms} room(s) over {args.instances} instances; "
              f"{args.publishers} publishers; {args.seconds:.0f} s per step", flush=True)
        print(HEADER, flush=True)
        pids = server_pids(stack)
        results = []
        for rate in args.rates:
            before = [cpu_seconds(pid) for pid in pids]
            started = time.monotonic()
            for pipe in pipes:
                pipe.send(("step", rate if pipe is pipes[0] else 0, args.seconds, args.drain))
            reports: list[StepReport] = [pipe.recv() for pipe in pipes]
            elapsed = time.monotonic() - started
            server_cpu = sum(cpu_seconds(pid) for pid in pids) - sum(before)
            sent_by_room = reports[0].sent_by_room
            expected = sum(n * members[room] for room, n in sent_by_room.items())
            received = sum(r.received for r in reports)
            latencies = sorted(x for r in reports for x in r.latencies_ms)
            result = StepResult(
                rate=rate,
                offered_deliveries_s=expected / args.seconds,
                delivered_s=received / args.seconds,
                lost=max(0, expected - received),
                p50_ms=percentile(latencies, 0.50),
                p99_ms=percentile(latencies, 0.99),
                p999_ms=percentile(latencies, 0.999),
                server_cpu_us_per_delivery=server_cpu / max(1, received) * 1e6,
                server_cpu_share=server_cpu / elapsed,
                client_cpu_share=sum(r.cpu_seconds for r in reports) / elapsed,
            )
            results.append(result)
            print_row(result)
            if result.p99_ms > P99_LIMIT_MS or result.lost:
                break
        for pipe in pipes:
            pipe.send(("stop",))
        return results
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        stack.stop()
        shutil.rmtree(var, ignore_errors=True)


HEADER = (f"{'msg/s':>7} {'offered/s':>10} {'delivered/s':>11} {'lost':>5} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'p99.9 ms':>8} {'srv µs/dlv':>10} {'srv cores':>9} {'load cores':>10}")


def print_row(r: StepResult) -> None:
    print(f"{r.rate:>7.0f} {r.offered_deliveries_s:>10.0f} {r.delivered_s:>11.0f} {r.lost:>5} "
          f"{r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {r.p999_ms:>8.1f} "
          f"{r.server_cpu_us_per_delivery:>10.1f} {r.server_cpu_share:>9.2f} "
          f"{r.client_cpu_share:>10.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=400)
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--rates", default="10,25,50,100,150,200,300",
                        type=lambda s: [float(x) for x in s.split(",")],
                        help="messages per second offered, step by step")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=10.0,
                        help="after a step, wait at most this long for late deliveries")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
